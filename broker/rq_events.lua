-- rq_events.lua: append a run's live events (executor_invoked, superstep_started...) to its instance's stream,
-- fenced by the run's lease, so a coordinator that lost its instance adds nothing after the new holder's
-- events. (rq_lib.lua is prepended.)
--
-- KEYS[1] lock   KEYS[2] epoch   KEYS[3] rq:events
-- ARGV[1] lease token   ARGV[2] lease epoch   ARGV[3] events cap   ARGV[4] stream TTL ms ('0': none)
-- ARGV[5..] encoded events, in order
--
-- Returns 1 appended; 0 fenced out, nothing appended

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
append_events(KEYS[3], ARGV[3], ARGV[4], ARGV, 5)
return 1
