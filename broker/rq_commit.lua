-- rq_commit.lua: a run queue run's checkpoint and the events it commits, in one fenced atomic call.
-- (checkpoint_lib.lua and rq_lib.lua are prepended.)
--
-- The checkpoint is written exactly as fenced_write.lua writes it; then, only if it was written, the events go
-- to the instance's stream: first the run's live events not yet flushed (superstep_started, executor_invoked...,
-- so the stream keeps their order), then the superstep's committed ones (outputs, requests, checkpoint_created,
-- superstep_completed). One call, so a committed output is in the stream exactly once: a superstep run again
-- after a crash committed nothing the first time, and a coordinator fenced out writes neither.
-- The reply also says whether a cancel was requested, so checking for it costs no round trip of its own.
--
-- KEYS[1..7] and ARGV[1..10] as fenced_write.lua
-- KEYS[8] rq:events   KEYS[9] rq:run:<hex> of the run
-- ARGV[11] events cap (approximate MAXLEN)   ARGV[12..] encoded events, in order
--
-- Returns {status}                       status 1 or 2: fenced out, nothing written (as fenced_write.lua)
--         {0, cancel, id, id...}        written; cancel = '1' if requested (else nil); the events' stream ids

local status = write_checkpoint(KEYS, ARGV)
if type(status) == 'table' then
  return status
end
if status ~= 0 then
  return {status}
end
redis.call('HSET', KEYS[9], 'ck', ARGV[3])
local reply = {0, redis.call('HGET', KEYS[9], 'cancel')}
for i = 12, #ARGV do
  reply[#reply + 1] = redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[11], '*', 'e', ARGV[i])
end
if tonumber(ARGV[9]) > 0 then
  redis.call('PEXPIRE', KEYS[8], ARGV[9])
end
return reply
