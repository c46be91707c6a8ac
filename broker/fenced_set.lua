-- fenced_set.lua: SET one key of an instance's slot, only if the lease (token + epoch) still holds.
-- For other components' records, e.g. a worker's result for (run, epoch, superstep, task).
--
-- KEYS[1]  lock key
-- KEYS[2]  epoch key
-- KEYS[3]  target key (same {instance} hash tag)
-- ARGV[1]  token
-- ARGV[2]  the lease's epoch
-- ARGV[3]  value bytes
-- ARGV[4]  TTL in milliseconds, '0' for none
--
-- Returns 1  written
--         0  fenced out (lease expired or taken over); nothing written

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[3], ARGV[3])
end
return 1
