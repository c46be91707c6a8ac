-- rq_reap.lua: forget consumers of the coordinators' group that are gone (rq_lib.lua is prepended).
--
-- Every coordinator process is a consumer of its own name; one that was killed never deletes itself. A
-- consumer is removed only if it has no pending entry (so no instance is ever dropped from the takeover
-- sweep) and has not read for `min_idle` ms; checked and deleted in one atomic call, so it cannot take an
-- entry in between. A live coordinator reads every second, and one removed anyway is re-created by its
-- next read.
--
-- KEYS[1] P:rq:ready
-- ARGV[1] consumer group   ARGV[2] min idle ms   ARGV[3] the calling consumer (never removed)
--
-- Returns the number of consumers removed

local removed = 0
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then
  return 0
end
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['name'] ~= ARGV[3] and tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
