-- rq_start.lua: a coordinator takes an instance it read from the ready stream (or took over from a dead
-- coordinator): its lease and its next run, in one atomic call (rq_lib.lua is prepended).
--
-- Taking the lease here, not in a separate acquire, means a run is never marked running without its lease,
-- nor leased without being marked. The run is the instance's `active` one if it has one — its coordinator
-- died with it in hand, so this is a takeover and `crash` counts it — else the head of its FIFO. The reply
-- carries the instance's latest checkpoint (head and keyframe), which the run would read next anyway.
--
-- KEYS[1] lock   KEYS[2] owner   KEYS[3] epoch   KEYS[4] rq:queue   KEYS[5] rq:sched   KEYS[6] P:rq:ready
-- KEYS[7] checkpoint index   KEYS[8] kfmap   KEYS[9] P:rq:instances
-- ARGV[1] instance id   ARGV[2] ready entry id   ARGV[3] consumer group   ARGV[4] lease token
-- ARGV[5] owner JSON   ARGV[6] lease TTL ms   ARGV[7] coordinator name   ARGV[8] now ms   ARGV[9] key base P:{I}:
-- ARGV[10] epoch TTL ms (the epoch key is extended as acquire.lua extends it: keys.py, "epoch")
--
-- Returns {0}                          stale: the entry is not the instance's live one; acknowledged, deleted
--         {1, owner JSON, lock PTTL}   busy: a lease is held (a run outside the queue, or a live holder
--                                      being taken over too early); nothing changed, try again later
--         {2}                          nothing to run (its queued runs were cancelled): entry removed
--         {3, epoch, run, latest checkpoint id, head, keyframe, takeover}   started; `run` as begin_run
--                                      returns it; `takeover` 1 when the run was taken from a dead coordinator

local sched, ready, base = KEYS[5], KEYS[6], ARGV[9]
if redis.call('HGET', sched, 'entry') ~= ARGV[2] then
  redis.call('XACK', ready, ARGV[3], ARGV[2])
  redis.call('XDEL', ready, ARGV[2])
  return {0}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {1, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}
end
local hex = redis.call('HGET', sched, 'active')
local crashed = false
if hex and redis.call('EXISTS', base .. 'rq:run:' .. hex) == 1 then
  crashed = true
else
  hex = pop_run(base, KEYS[4])
end
if not hex then
  reschedule(ready, ARGV[3], KEYS[4], sched, ARGV[1])
  return {2}
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[6])
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
local epoch = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[10])
redis.call('ZADD', KEYS[9], ARGV[8], ARGV[1])
local run = begin_run(base, sched, hex, ARGV[7], ARGV[8], crashed)
local latest = redis.call('ZRANGE', KEYS[7], -1, -1)[1]
local head, keyframe = false, false
if latest then
  head = redis.call('GET', base .. 'ckpt:' .. latest)
  local kf = redis.call('HGET', KEYS[8], latest)
  if kf then
    keyframe = redis.call('GET', base .. 'kf:' .. kf)
  end
end
local takeover = 0
if crashed then
  takeover = 1
end
return {3, epoch, run, latest or false, head, keyframe, takeover}
