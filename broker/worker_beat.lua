-- worker_beat.lua: one heartbeat of a worker in the registry (broker/worker_registry.py): register or refresh
-- it on each queue it consumes, prune the entries whose heartbeat lapsed, keep every key's TTL at its latest
-- entry's expiry. Times are the server's clock (TIME), so workers and readers never compare two clocks.
--
-- KEYS[1]       the queue index (zset: queue -> expiry in ms)
-- KEYS[2i]      queue i's live set (zset: node -> expiry in ms)
-- KEYS[2i+1]    queue i's entries (hash: node -> "<token>:<json>")
-- ARGV[1]       the node name (name@host)
-- ARGV[2]       this registration's token (random, no ':'; one per worker process start)
-- ARGV[3]       the entry (json)
-- ARGV[4]       TTL of the entry in milliseconds
-- ARGV[4+i]     queue i's name
--
-- Returns the entry ("<token>:<json>") of another live registration under the same node name (two worker
-- processes given one --hostname: Celery's own check is mingle's, which barrierflow workers skip), or false.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local expires = now + ttl
local mine = token .. ':'
local other = false

-- PEXPIRE the keys to the latest expiry in zset KEYS[...] (an empty zset does not exist: nothing to do).
local function expire_with(zset, ...)
  local latest = redis.call('ZRANGE', zset, -1, -1, 'WITHSCORES')[2]
  if latest then
    local ms = math.max(1, tonumber(latest) - now)
    redis.call('PEXPIRE', zset, ms)
    for _, key in ipairs({...}) do
      redis.call('PEXPIRE', key, ms)
    end
  end
end

for i = 1, #ARGV - 4 do
  local live, entries, queue = KEYS[2 * i], KEYS[2 * i + 1], ARGV[4 + i]
  local lapsed = redis.call('ZRANGEBYSCORE', live, '-inf', now)
  for _, gone in ipairs(lapsed) do
    redis.call('ZREM', live, gone)
    redis.call('HDEL', entries, gone)
  end
  local previous = redis.call('HGET', entries, node)
  if previous and string.sub(previous, 1, #mine) ~= mine then
    other = previous
  end
  redis.call('ZADD', live, expires, node)
  redis.call('HSET', entries, node, mine .. ARGV[3])
  expire_with(live, entries)
  local listed = tonumber(redis.call('ZSCORE', KEYS[1], queue))
  if not listed or listed < expires then
    redis.call('ZADD', KEYS[1], expires, queue)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
expire_with(KEYS[1])
return other
