-- rq_finish.lua: a coordinator is done with a run (it ended, or is handed back at a barrier), in one fenced
-- atomic call: its last events, its record, the instance's next run or the instance's release.
-- (rq_lib.lua is prepended.)
--
-- Ended: the record gets its final state and result and a pub/sub notice wakes its waiters. Handed back
-- (the coordinator is shutting down): the run is queued again at the head of its instance's FIFO. Then, if
-- the coordinator goes on and a run is queued, that run starts under the same lease (one lease per instance,
-- however many runs it drains); otherwise the lease is released and the instance's ready entry acknowledged,
-- and re-added if runs are still queued, so another coordinator takes it at once (and an instance left idle
-- has its event stream compacted: compact_events in rq_lib.lua).
--
-- Fenced: a coordinator whose lease ended (its instance was taken over) changes nothing; the run is the new
-- holder's now, and its result will be that holder's.
--
-- KEYS[1] lock   KEYS[2] owner   KEYS[3] epoch   KEYS[4] rq:queue   KEYS[5] rq:sched   KEYS[6] rq:run:<hex>
-- KEYS[7] rq:events   KEYS[8] P:rq:ready   KEYS[9] rq:done   KEYS[10] checkpoint index   KEYS[11] P:rq:instances
-- ARGV[1] lease token   ARGV[2] lease epoch   ARGV[3] instance id   ARGV[4] run hex   ARGV[5] run id
-- ARGV[6] consumer group   ARGV[7] 'completed' | 'failed' | 'cancelled' | 'handback'   ARGV[8] result bytes (kept at rq:res:<hex>)
-- ARGV[9] now ms   ARGV[10] result TTL ms   ARGV[11] ended records kept per instance   ARGV[12] events cap
-- ARGV[13] stream TTL ms ('0': none)   ARGV[14] '1': start the next queued run   ARGV[15] lease TTL ms
-- ARGV[16] coordinator name   ARGV[17] pub/sub channel of ended runs   ARGV[18] key base P:{I}:
-- ARGV[19] epoch TTL ms (extended with the lease when the next run starts, as renew.lua does)
-- ARGV[20..] encoded events, in order (the last one is run_ended when the run ended)
--
-- Returns {0}          fenced out: nothing changed
--         {1}          done: the lease is released
--         {2, run}     the next run of the instance started under the same lease (as begin_run returns it)

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return {0}
end
local base, queue, sched = ARGV[18], KEYS[4], KEYS[5]
append_events(KEYS[7], ARGV[12], ARGV[13], ARGV, 20)
if ARGV[7] == 'handback' then
  redis.call('HSET', KEYS[6], 'state', 'queued')
  redis.call('HDEL', KEYS[6], 'coord')
  redis.call('LPUSH', queue, ARGV[4])
else
  local checkpoint = redis.call('ZRANGE', KEYS[10], -1, -1)[1]
  end_run(base, KEYS[9], ARGV[4], ARGV[7], ARGV[8], ARGV[9], checkpoint, ARGV[10], ARGV[11])
  redis.call('PUBLISH', ARGV[17], ARGV[5])
end
redis.call('HDEL', sched, 'active')
redis.call('ZADD', KEYS[11], ARGV[9], ARGV[3])
if ARGV[14] == '1' then
  local hex = pop_run(base, queue)
  if hex then
    redis.call('PEXPIRE', KEYS[1], ARGV[15])
    redis.call('PEXPIRE', KEYS[2], ARGV[15])
    redis.call('PEXPIRE', KEYS[3], ARGV[19])
    return {2, begin_run(base, sched, hex, ARGV[16], ARGV[9], false)}
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
reschedule(KEYS[8], ARGV[6], queue, sched, ARGV[3])
if redis.call('LLEN', queue) == 0 then
  compact_events(KEYS[7], base .. 'rq:events:spare')
end
return {1}
