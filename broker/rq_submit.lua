-- rq_submit.lua: a new run, durable and scheduled, in one atomic call (rq_lib.lua is prepended).
--
-- The record, its place in the instance's FIFO and the instance's entry on the ready stream move together:
-- a submitter that dies after this call has lost nothing, one that dies before it has submitted nothing.
-- An instance gets a ready entry only if it has none, so however many runs it has queued, it occupies one
-- entry (one coordinator slot, when taken) and never holds up other instances.
--
-- KEYS[1] rq:queue   KEYS[2] rq:sched   KEYS[3] rq:run:<hex>   KEYS[4] rq:events   KEYS[5] lock
-- KEYS[6] P:rq:ready   KEYS[7] P:rq:instances (zset: instance -> last activity ms)
-- ARGV[1] instance id   ARGV[2] run hex   ARGV[3] run id   ARGV[4] '1': refuse if the instance is busy
-- ARGV[5] workflow name   ARGV[6] graph signature ('' unknown)   ARGV[7] input bytes   ARGV[8] metadata bytes
-- ARGV[9] now ms   ARGV[10] instances index: entries kept   ARGV[11] key base P:{I}: (the run's input and
-- metadata keys, rq:in:<hex> and rq:meta:<hex>, are built from it: same slot)
--
-- Returns {1, after}     queued; `after` is the instance stream's last id before this run (its events follow it)
--         {0, busy}      refused (ARGV[4]): the hex id of the queued or running run, or 'lock' for a lease held
--                        outside the queue; nothing changed

if ARGV[4] == '1' then
  local busy = redis.call('HGET', KEYS[2], 'active') or redis.call('LINDEX', KEYS[1], 0)
  if not busy and redis.call('EXISTS', KEYS[5]) == 1 then
    busy = 'lock'
  end
  if busy then
    return {0, busy}
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('run ' .. ARGV[3] .. ' exists already')
end
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local after = '0-0'
if last[1] then
  after = last[1][1]
end
local run, input, _, meta = run_keys(ARGV[11], ARGV[2])
redis.call('HSET', run, 'wf', ARGV[5], 'sig', ARGV[6], 'state', 'queued', 'sub', ARGV[9], 'att', 0, 'after', after)
redis.call('SET', input, ARGV[7])
if ARGV[8] ~= '' then
  redis.call('SET', meta, ARGV[8])
end
redis.call('RPUSH', KEYS[1], ARGV[2])
if redis.call('HEXISTS', KEYS[2], 'entry') == 0 then
  redis.call('HSET', KEYS[2], 'entry', redis.call('XADD', KEYS[6], '*', 'i', ARGV[1]))
end
redis.call('ZADD', KEYS[7], ARGV[9], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(tonumber(ARGV[10]) + 1))
return {1, after}
