-- acquire.lua: take an instance's reservation and advance its fencing epoch in one atomic call.
--
-- KEYS[1]  lock key   (string: holder's token, PX = lease TTL)
-- KEYS[2]  owner key  (string: JSON about the holder, same PX as the lock)
-- KEYS[3]  epoch key  (integer counter; PX = epoch TTL, always longer than the lease: see keys.py)
-- ARGV[1]  token
-- ARGV[2]  owner JSON
-- ARGV[3]  lease TTL in milliseconds
-- ARGV[4]  epoch TTL in milliseconds
--
-- Returns {1, new_epoch}                    reserved (also when this same token already held it, so an
--                                           acquire retried after a lost reply succeeds like the first)
--         {0, owner JSON or nil, lock PTTL} another token holds the instance; nothing changed
-- Errors   WRONGTYPE / non-integer epoch, raised before anything is written.

local epoch = redis.call('GET', KEYS[3])
if epoch and not tonumber(epoch) then
  return redis.error_reply('WRONGTYPE epoch key ' .. KEYS[3] .. ' does not hold an integer')
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[3])
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local next_epoch = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {1, next_epoch}
