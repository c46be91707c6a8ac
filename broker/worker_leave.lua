-- worker_leave.lua: a worker leaves the registry (broker/worker_registry.py): it stopped consuming these
-- queues, or it shuts down. Compare-and-delete on the registration's token.
--
-- Why compare: worker process A (node w1@h) hangs; its entry lapses; process B starts as w1@h and
-- registers; when A finally shuts down, a plain HDEL would remove B's entry, and coordinators would see no
-- worker where B consumes.
--
-- KEYS[2i-1]    queue i's live set (zset: node -> expiry in ms)
-- KEYS[2i]      queue i's entries (hash: node -> "<token>:<json>")
-- ARGV[1]       the node name
-- ARGV[2]       the registration's token, or '' to remove whatever entry the node has (a killed worker's)
--
-- Returns the number of queues the node was removed from. The queue index is left to lapse (readers skip a
-- queue without live entries).

local node, token = ARGV[1], ARGV[2]
local removed = 0
for i = 1, #KEYS / 2 do
  local live, entries = KEYS[2 * i - 1], KEYS[2 * i]
  local entry = redis.call('HGET', entries, node)
  if entry and (token == '' or string.sub(entry, 1, #token + 1) == token .. ':') then
    redis.call('ZREM', live, node)
    redis.call('HDEL', entries, node)
    removed = removed + 1
  end
end
return removed
