-- rq_cancel.lua: cancel a run (rq_lib.lua is prepended).
--
-- Queued (also handed back): it leaves its instance's FIFO and ends `cancelled` here, atomically, so no
-- coordinator can start it afterwards. Running: the request is recorded on the run and announced on a pub/sub
-- channel; its coordinator stops it at a barrier (the notice stops it promptly; a coordinator that missed the
-- notice learns it from its next checkpoint write, and one that takes the run over, from the record).
--
-- KEYS[1] rq:run:<hex>   KEYS[2] rq:queue   KEYS[3] rq:events   KEYS[4] rq:done
-- ARGV[1] run hex   ARGV[2] run id   ARGV[3] now ms   ARGV[4] result bytes of a cancelled run
-- ARGV[5] events cap   ARGV[6] stream TTL ms   ARGV[7] result TTL ms   ARGV[8] ended records kept per instance
-- ARGV[9] channel of ended runs   ARGV[10] channel of cancel requests   ARGV[11] key base P:{I}:
-- ARGV[12] encoded run_ended event
--
-- Returns 1 cancelled (it was queued)   2 requested (it is running)   0 it had ended already   -1 no such run

local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
if state == 'queued' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  append_events(KEYS[3], ARGV[5], ARGV[6], ARGV, 12)
  end_run(ARGV[11], KEYS[4], ARGV[1], 'cancelled', ARGV[4], ARGV[3], false, ARGV[7], ARGV[8])
  redis.call('PUBLISH', ARGV[9], ARGV[2])
  return 1
end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[10], ARGV[2])
  return 2
end
return 0
