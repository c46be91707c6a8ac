-- checkpoint_lib.lua: helpers shared by fenced_write.lua, delete_record.lua and the run queue's rq_commit.lua.
-- scripts.py prepends this file to each of them, so they stay one EVALSHA each; it is not run on its own.
--
-- Layout (see keys.py): index zset (id -> sequence), kfmap hash (id -> keyframe id), kfrefs hash
-- (keyframe id -> heads naming it), head strings at <base>ckpt:<id>, keyframe strings at <base>kf:<id>, and
-- for an id that does not name its instance (a "foreign" id a user chose) a pointer string
-- <prefix>:foreign:<id> -> instance, outside the instance's slot (see keys.py for what that means on Cluster).

-- An error message if `key` holds something other than `want` (checked before any write: a Lua script is
-- not rolled back when a command fails halfway, so type errors must surface while nothing has changed yet).
local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', expected a ' .. want
  end
  return nil
end

-- Where one instance's checkpoint keys are: base P:{I}:, the three bookkeeping keys, the minted-id prefix
-- "I@" and the foreign pointer prefix "P:foreign:".
local function layout(base, index, kfmap, kfrefs, minted, foreign)
  return {base = base, index = index, kfmap = kfmap, kfrefs = kfrefs, minted = minted, foreign = foreign}
end

-- Whether `id` is not one barrierflow minted for this instance (I@ + 20 characters without '@', the rule of
-- engine.checkpoint.instance_of), so a pointer key locates it.
local function is_foreign(at, id)
  local n = #at.minted
  if #id ~= n + 20 or string.sub(id, 1, n) ~= at.minted then
    return true
  end
  return string.find(id, '@', n + 1, true) ~= nil
end

-- Forget one head: its index entry, bytes, keyframe mapping and pointer; delete its keyframe when no head
-- names it.
local function drop(at, id)
  local kf = redis.call('HGET', at.kfmap, id)
  redis.call('ZREM', at.index, id)
  redis.call('HDEL', at.kfmap, id)
  redis.call('DEL', at.base .. 'ckpt:' .. id)
  if is_foreign(at, id) then
    redis.call('DEL', at.foreign .. id)
  end
  if kf and redis.call('HINCRBY', at.kfrefs, kf, -1) <= 0 then
    redis.call('HDEL', at.kfrefs, kf)
    redis.call('DEL', at.base .. 'kf:' .. kf)
  end
end

-- The fenced checkpoint write (see fenced_write.lua for KEYS/ARGV and the replies): fenced_write.lua is this
-- call alone; the run queue's rq_commit.lua journals the superstep's events after it in the same script.
local function write_checkpoint(keys, argv)
  local at = layout(argv[10], keys[3], keys[4], keys[5], argv[11], argv[12])
  local bad = wrong_type(at.index, 'zset') or wrong_type(at.kfmap, 'hash') or wrong_type(at.kfrefs, 'hash')
    or wrong_type(keys[6], 'string') or wrong_type(keys[7], 'string')
  if bad then
    return redis.error_reply(bad)
  end
  if argv[1] ~= '' then
    if redis.call('GET', keys[1]) ~= argv[1] then
      return 1
    end
    if redis.call('GET', keys[2]) ~= argv[2] then
      return 2
    end
    redis.call('PEXPIRE', keys[2], argv[14])
  end

  local id, kf = argv[3], argv[4]
  if argv[6] == '1' then
    redis.call('SET', keys[7], argv[7])
  end
  -- Count the new reference before dropping a previous head of the same id, so a shared keyframe survives.
  redis.call('HINCRBY', at.kfrefs, kf, 1)
  if redis.call('HEXISTS', at.kfmap, id) == 1 then
    drop(at, id)
  end
  redis.call('SET', keys[6], argv[5])
  redis.call('HSET', at.kfmap, id, kf)
  if is_foreign(at, id) then
    redis.call('SET', at.foreign .. id, argv[13])
  end
  local top = redis.call('ZRANGE', at.index, -1, -1, 'WITHSCORES')
  local seq = 1
  if top[2] then
    seq = tonumber(top[2]) + 1
  end
  redis.call('ZADD', at.index, seq, id)

  local excess = redis.call('ZCARD', at.index) - tonumber(argv[8])
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', at.index, 0, excess - 1)) do
      drop(at, old)
    end
  end

  local ttl = tonumber(argv[9])
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
end
