-- read_record.lua: a checkpoint's head and its keyframe in one round trip (and one consistent view).
--
-- KEYS[1]  head key       P:{I}:ckpt:<id>
-- KEYS[2]  kfmap hash     checkpoint id -> keyframe id
-- ARGV[1]  checkpoint id
-- ARGV[2]  key base P:{I}: (the keyframe key is built from it, so it shares KEYS' hash tag and slot)
--
-- Returns nil             no such checkpoint
--         {head}          head found, keyframe missing (the caller reports a decode error)
--         {head, kf}      both

local head = redis.call('GET', KEYS[1])
if not head then
  return false
end
local kf_id = redis.call('HGET', KEYS[2], ARGV[1])
if not kf_id then
  return {head}
end
local kf = redis.call('GET', ARGV[2] .. 'kf:' .. kf_id)
if not kf then
  return {head}
end
return {head, kf}
