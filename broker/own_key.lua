-- own_key.lua: compare-and-expire / compare-and-delete of a key holding its owner's token (a worker's claim).
--
-- Why compare: copy A's claim lapses (A was stalled), copy B claims the task; when A resumes, a plain
-- PEXPIRE or DEL would extend or delete B's claim, and the coordinator would re-send a task B is running.
--
-- KEYS[1]  the key
-- ARGV[1]  the owner's token
-- ARGV[2]  new TTL in milliseconds, or '0' to delete
--
-- Returns 1 done, 0 the key is not (or no longer) this owner's: nothing changed

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
