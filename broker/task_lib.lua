-- task_lib.lua: the fence of a worker's task, shared by claim.lua and put_result.lua (scripts.py prepends it).
--
-- A task copy may act only while its run's lease holds (lock = token, epoch key = the lease's epoch) and
-- while its superstep has not been collected yet: the coordinator's discard leaves a marker
-- "<token>:<superstep>" (the last superstep it collected under that lease), so a late copy of a collected
-- superstep, run while the same lease still holds (later supersteps of the same run), re-creates nothing.
--
-- Returns 0 when the lease has ended, 3 when the superstep was collected, nil when the copy may act.
local function task_fence(lock, epoch, marker, token, lease_epoch, superstep)
  if redis.call('GET', lock) ~= token or redis.call('GET', epoch) ~= lease_epoch then
    return 0
  end
  local collected = redis.call('GET', marker)
  if collected then
    local sep = string.find(collected, ':', 1, true)
    if sep and string.sub(collected, 1, sep - 1) == token
      and tonumber(string.sub(collected, sep + 1)) >= tonumber(superstep) then
      return 3
    end
  end
  return nil
end
