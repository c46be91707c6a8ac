-- fenced_write.lua: store one checkpoint record as the instance's newest, fenced, with retention, atomically.
-- (checkpoint_lib.lua is prepended: wrong_type, layout, is_foreign, drop.)
--
-- The fence: the lock must hold the lease's token AND the epoch key must equal the lease's epoch, checked in
-- the same atomic step as the write. A holder paused past its TTL (see engine/store.py) therefore writes
-- nothing once another run has reserved, even if it never noticed that its lease ended.
--
-- KEYS[1]  lock key          KEYS[2]  epoch key
-- KEYS[3]  index zset        KEYS[4]  kfmap hash        KEYS[5]  kfrefs hash
-- KEYS[6]  head key          KEYS[7]  keyframe key of this record's keyframe
-- ARGV[1]  token, '' for an unfenced write (save_checkpoint without a lease)
-- ARGV[2]  the lease's epoch
-- ARGV[3]  checkpoint id     ARGV[4]  keyframe id       ARGV[5]  head bytes
-- ARGV[6]  '1' when ARGV[7] holds keyframe bytes to write, '0' when the head reuses an existing keyframe
-- ARGV[7]  keyframe bytes (or '')
-- ARGV[8]  retention: heads kept for the instance (the oldest beyond it are dropped)
-- ARGV[9]  checkpoint TTL in milliseconds, '0' for none: then every checkpoint key of the instance (heads,
--          keyframes, index, kfmap, kfrefs, foreign pointers; never the lock or owner) expires that long after
--          its newest write, all together, so no head outlives its keyframe or its index entry
-- ARGV[10] key base P:{I}: (keys built from it share the hash tag, hence the slot, of KEYS)
-- ARGV[11] minted-id prefix I@          ARGV[12] foreign pointer prefix P:foreign:
-- ARGV[13] the instance id (a foreign id's pointer holds it)
-- ARGV[14] epoch TTL in milliseconds (a fenced write extends the epoch key to it, as acquire and renew do)
--
-- Returns 0  written
--         1  fenced out: the lock is gone or held by another token; nothing written
--         2  fenced out: the epoch moved on (reserved again since); nothing written
-- Errors   WRONGTYPE on any key of the layout, raised before anything is written.

local at = layout(ARGV[10], KEYS[3], KEYS[4], KEYS[5], ARGV[11], ARGV[12])
local bad = wrong_type(at.index, 'zset') or wrong_type(at.kfmap, 'hash') or wrong_type(at.kfrefs, 'hash')
  or wrong_type(KEYS[6], 'string') or wrong_type(KEYS[7], 'string')
if bad then
  return redis.error_reply(bad)
end
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 1
  end
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return 2
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[14])
end

local id, kf = ARGV[3], ARGV[4]
if ARGV[6] == '1' then
  redis.call('SET', KEYS[7], ARGV[7])
end
-- Count the new reference before dropping a previous head of the same id, so a shared keyframe survives.
redis.call('HINCRBY', at.kfrefs, kf, 1)
if redis.call('HEXISTS', at.kfmap, id) == 1 then
  drop(at, id)
end
redis.call('SET', KEYS[6], ARGV[5])
redis.call('HSET', at.kfmap, id, kf)
if is_foreign(at, id) then
  redis.call('SET', at.foreign .. id, ARGV[13])
end
local top = redis.call('ZRANGE', at.index, -1, -1, 'WITHSCORES')
local seq = 1
if top[2] then
  seq = tonumber(top[2]) + 1
end
redis.call('ZADD', at.index, seq, id)

local excess = redis.call('ZCARD', at.index) - tonumber(ARGV[8])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', at.index, 0, excess - 1)) do
    drop(at, old)
  end
end

local ttl = tonumber(ARGV[9])
if ttl > 0 then
  redis.call('PEXPIRE', at.index, ttl)
  redis.call('PEXPIRE', at.kfmap, ttl)
  redis.call('PEXPIRE', at.kfrefs, ttl)
  for _, cid in ipairs(redis.call('ZRANGE', at.index, 0, -1)) do
    redis.call('PEXPIRE', at.base .. 'ckpt:' .. cid, ttl)
    if is_foreign(at, cid) then
      redis.call('PEXPIRE', at.foreign .. cid, ttl)
    end
  end
  for _, kid in ipairs(redis.call('HKEYS', at.kfrefs)) do
    redis.call('PEXPIRE', at.base .. 'kf:' .. kid, ttl)
  end
end
return 0
