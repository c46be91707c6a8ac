-- put_result.lua: a worker's result for one task of a superstep, fenced, first write wins, plus a wake-up.
--
-- Used by workers/tasks.py through broker/results.py. One call so that the lease check, the write and the
-- notification cannot be separated: a worker whose lease ended writes nothing and wakes nobody, and a
-- duplicate of a task (a Celery redelivery, or the coordinator's re-dispatch after a deadline) finds the
-- record already there and changes nothing, so the coordinator is woken once per task.
--
-- KEYS[1]  lock key of the instance
-- KEYS[2]  epoch key of the instance
-- KEYS[3]  result key   P:{I}:bfw:res:<run>:<epoch>:<superstep>:<task>
-- KEYS[4]  notify list  P:{I}:bfw:note:<run>:<epoch>:<superstep>
-- ARGV[1]  the lease's token
-- ARGV[2]  the lease's epoch
-- ARGV[3]  result bytes
-- ARGV[4]  TTL in milliseconds of the result and of the notify list (> 0)
-- ARGV[5]  what to push on the notify list (the task number)
--
-- Returns 1  written, and ARGV[5] pushed on the notify list
--         2  a result of this task was already there; nothing changed (duplicate)
--         0  fenced out: the lock is gone, held by another token, or the epoch moved on; nothing written

if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return 2
end
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return 1
