-- put_result.lua: a worker's result for one task of a superstep, fenced, first write wins, plus a wake-up.
-- (task_lib.lua is prepended: task_fence.)
--
-- Used by workers/tasks.py through broker/results.py. One call so that the lease check, the write and the
-- notification cannot be separated: a worker whose lease ended writes nothing and wakes nobody, and a
-- duplicate of a task (a Celery redelivery, or the coordinator's re-send after its worker died) finds the
-- record already there and changes nothing, so the coordinator is woken once per task.
--
-- KEYS[1]  lock key of the instance
-- KEYS[2]  epoch key of the instance
-- KEYS[3]  collected marker P:{I}:bfw:collected (see task_lib.lua)
-- KEYS[4]  result key   P:{I}:bfw:res:<run>:<epoch>:<superstep>:<task>
-- KEYS[5]  notify list  P:{I}:bfw:note:<run>:<epoch>:<superstep>
-- ARGV[1]  the lease's token
-- ARGV[2]  the lease's epoch
-- ARGV[3]  the superstep
-- ARGV[4]  result bytes
-- ARGV[5]  TTL in milliseconds of the result and of the notify list (> 0)
-- ARGV[6]  what to push on the notify list (the task number)
--
-- Returns 1  written, and ARGV[6] pushed on the notify list (which always gets the TTL)
--         2  a result of this task was already there; nothing changed (duplicate)
--         0  fenced out: the lock is gone, held by another token, or the epoch moved on; nothing written
--         3  the superstep was collected already (a late copy); nothing written

local fenced = task_fence(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
if fenced then
  return fenced
end
if not redis.call('SET', KEYS[4], ARGV[4], 'NX', 'PX', ARGV[5]) then
  return 2
end
redis.call('LPUSH', KEYS[5], ARGV[6])
redis.call('PEXPIRE', KEYS[5], ARGV[5])
return 1
