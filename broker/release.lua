-- release.lua: compare-and-delete. Drop the lease only if this token still holds it at this epoch.
--
-- Why compare: run A's lease expires while A is paused, run B reserves; when A wakes and releases, a plain DEL
-- would free B's lease and let a third run in beside B. Comparing the token (and epoch) makes A's release a no-op.
--
-- KEYS[1]  lock key
-- KEYS[2]  owner key
-- KEYS[3]  epoch key
-- ARGV[1]  token
-- ARGV[2]  the lease's epoch
-- ARGV[3]  '1' to delete the epoch key too (delete_instance: nothing of the instance stays), else '0'
--
-- Returns n > 0  released: the number of keys deleted
--         0      this token did not hold it; nothing changed

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '1' then
  return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
return redis.call('DEL', KEYS[1], KEYS[2])
