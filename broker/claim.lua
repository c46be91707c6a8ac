-- claim.lua: a worker takes a task copy: fenced, one running copy at a time, and "picked up" recorded.
-- (task_lib.lua is prepended: task_fence.)
--
-- Why each key (timeline in broker/results.py):
-- * the claim (SET NX semantics, token of this copy, short PX refreshed while it runs) says "a worker is
--   running this task now"; a second copy finds another copy's claim and does not run, nor touch it;
-- * "started" (the highest send number a worker picked up, PX = result TTL) tells the coordinator whether
--   the latest copy it sent has left the queue: a task whose latest copy was never picked up is waiting in the
--   queue and is not re-sent; one picked up whose claim lapsed without a result lost its worker. A copy that
--   finds another copy running still counts as picked up: it has left the queue, so if the running copy's
--   worker dies, nothing is queued any more and the task must be sent again.
--
-- KEYS[1]  lock key     KEYS[2]  epoch key     KEYS[3]  collected marker
-- KEYS[4]  result key   KEYS[5]  claim key     KEYS[6]  started key
-- ARGV[1]  the lease's token     ARGV[2]  the lease's epoch     ARGV[3]  the superstep
-- ARGV[4]  this copy's claim token (unique per copy run)
-- ARGV[5]  claim TTL in milliseconds
-- ARGV[6]  this copy's send number (1 = first send, 2 = first re-send, ...)
-- ARGV[7]  started TTL in milliseconds
--
-- Returns 1  claimed: run the task
--         0  the lease has ended          3  the superstep was collected
--         2  the result is there already  4  another copy holds the claim (it is running)

local fenced = task_fence(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
if fenced then
  return fenced
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 2
end
local started = tonumber(redis.call('GET', KEYS[6])) or 0
if tonumber(ARGV[6]) > started then
  redis.call('SET', KEYS[6], ARGV[6], 'PX', ARGV[7])
end
local holder = redis.call('GET', KEYS[5])
if holder and holder ~= ARGV[4] then
  return 4
end
redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
return 1
