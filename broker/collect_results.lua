-- collect_results.lua: the coordinator reads finished tasks' records of a superstep and, when told, deletes the
-- superstep's keys and marks it collected, in one atomic call (broker/results.py, ResultReader).
--
-- Why one script: the calls of hundreds of runs go to Redis together in one pipeline (broker/batching.py), and
-- the common end of a superstep (its last results arrive) is a read and a clean-up that then cost one call,
-- not an MGET plus a MULTI transaction. Deleting and marking together keeps the rule of ResultReader.discard:
-- a late copy of a collected superstep finds the marker and re-creates nothing (task_lib.lua).
--
-- KEYS[1]                   the instance's collected marker P:{I}:bfw:collected
-- KEYS[2 .. ARGV[1]+1]      the result records to read
-- KEYS[ARGV[1]+2 ..]        the superstep's other keys, deleted with the records read when ARGV[2] = '1'
-- ARGV[1]  how many records to read
-- ARGV[2]  '1': delete the keys and set the marker (only if every record read is there); '0': read only
-- ARGV[3]  the marker's value <token>:<superstep>
-- ARGV[4]  the marker's TTL in milliseconds
--
-- Returns the records read (nil where missing). With ARGV[2] = '1', nothing is deleted when one is missing:
-- the caller then checks that task as before.

local n = tonumber(ARGV[1])
local values = {}
local complete = true
for i = 1, n do
  local value = redis.call('GET', KEYS[i + 1])
  if not value then
    complete = false
    value = false
  end
  values[i] = value
end
if ARGV[2] == '1' and complete then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  if #KEYS > 1 then
    redis.call('DEL', unpack(KEYS, 2))
  end
end
return values
