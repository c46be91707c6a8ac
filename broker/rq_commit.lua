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
-- KEYS     fenced_write.lua's keys (RedisStore.checkpoint_call builds them), then:
--          KEYS[#KEYS - 1] rq:events   KEYS[#KEYS] rq:run:<hex> of the run
-- ARGV[1]  n: how many of fenced_write.lua's arguments follow (so its layout may change without this script)
-- ARGV[2 .. n + 1]  fenced_write.lua's arguments
-- ARGV[n + 2]  events cap (approximate MAXLEN)   ARGV[n + 3 ..] encoded events, in order
--
-- Returns {status}                       status 1 or 2: fenced out, nothing written (as fenced_write.lua)
--         {0, cancel, id, id...}        written; cancel = '1' if requested (else nil); the events' stream ids

local n = tonumber(ARGV[1])
local events, run = KEYS[#KEYS - 1], KEYS[#KEYS]
local status = write_checkpoint(KEYS, {unpack(ARGV, 2, n + 1)})
if type(status) == 'table' then
  return status
end
if status ~= 0 then
  return {status}
end
redis.call('HSET', run, 'ck', ARGV[4])  -- the checkpoint id (fenced_write's ARGV[3])
local reply = {0, redis.call('HGET', run, 'cancel')}
for i = n + 3, #ARGV do
  reply[#reply + 1] = redis.call('XADD', events, 'MAXLEN', '~', ARGV[n + 2], '*', 'e', ARGV[i])
end
if tonumber(ARGV[10]) > 0 then  -- the checkpoint TTL (fenced_write's ARGV[9]): the stream expires with them
  redis.call('PEXPIRE', events, ARGV[10])
end
return reply
