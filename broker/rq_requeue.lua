-- rq_requeue.lua: give back ready entries a coordinator read but will not start (it is shutting down), so
-- another coordinator takes their instances at once instead of after the lease TTL. (rq_lib.lua is prepended.)
--
-- KEYS[1] rq:sched   KEYS[2] rq:queue   KEYS[3] P:rq:ready
-- ARGV[1] ready entry id   ARGV[2] consumer group   ARGV[3] instance id
--
-- Returns 1 given back (a fresh entry if runs are queued); 0 the entry was not the instance's: dropped

if redis.call('HGET', KEYS[1], 'entry') ~= ARGV[1] then
  redis.call('XACK', KEYS[3], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[3], ARGV[1])
  return 0
end
reschedule(KEYS[3], ARGV[2], KEYS[2], KEYS[1], ARGV[3])
return 1
