-- checkpoint_lib.lua: helpers shared by fenced_write.lua and delete_record.lua.
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
