-- checkpoint_lib.lua: helpers shared by fenced_write.lua and delete_record.lua.
-- scripts.py prepends this file to each of them, so they stay one EVALSHA each; it is not run on its own.
--
-- Layout (see keys.py): index zset (id -> sequence), kfmap hash (id -> keyframe id), kfrefs hash
-- (keyframe id -> heads naming it), head strings at <base>ckpt:<id>, keyframe strings at <base>kf:<id>.

-- An error message if `key` holds something other than `want` (checked before any write: a Lua script is
-- not rolled back when a command fails halfway, so type errors must surface while nothing has changed yet).
local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', expected a ' .. want
  end
  return nil
end

-- Forget one head: its index entry, bytes and keyframe mapping; delete its keyframe when no head names it.
local function drop(base, index, kfmap, kfrefs, id)
  local kf = redis.call('HGET', kfmap, id)
  redis.call('ZREM', index, id)
  redis.call('HDEL', kfmap, id)
  redis.call('DEL', base .. 'ckpt:' .. id)
  if kf and redis.call('HINCRBY', kfrefs, kf, -1) <= 0 then
    redis.call('HDEL', kfrefs, kf)
    redis.call('DEL', base .. 'kf:' .. kf)
  end
end
