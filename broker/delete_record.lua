-- delete_record.lua: delete one checkpoint, and its keyframe once no remaining head names it.
-- (checkpoint_lib.lua is prepended: wrong_type, layout, is_foreign, drop.) Not fenced, like
-- MemoryStore.delete_record.
--
-- KEYS[1]  index zset        KEYS[2]  kfmap hash        KEYS[3]  kfrefs hash
-- ARGV[1]  checkpoint id
-- ARGV[2]  key base P:{I}: (head and keyframe keys are built from it, same slot)
-- ARGV[3]  minted-id prefix I@        ARGV[4]  foreign pointer prefix P:foreign:
--
-- Returns 1  deleted
--         0  no such checkpoint; nothing changed
-- Errors   WRONGTYPE on any key of the layout, raised before anything is deleted.

local bad = wrong_type(KEYS[1], 'zset') or wrong_type(KEYS[2], 'hash') or wrong_type(KEYS[3], 'hash')
if bad then
  return redis.error_reply(bad)
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 0
end
drop(layout(ARGV[2], KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4]), ARGV[1])
return 1
