-- renew.lua: extend a lease, only if this token still holds it at this epoch.
--
-- KEYS[1]  lock key
-- KEYS[2]  owner key (renewed with the lock: status and the busy error name the holder while it holds)
-- KEYS[3]  epoch key (extended to the epoch TTL, so it always outlives the lock: see keys.py)
-- ARGV[1]  token
-- ARGV[2]  the lease's epoch
-- ARGV[3]  lease TTL in milliseconds
-- ARGV[4]  epoch TTL in milliseconds
--
-- Returns 1  renewed (lock and owner get the new PX)
--         0  the lease is gone (expired, released, or taken by another run); nothing changed

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
