-- rq_lib.lua: helpers shared by the run queue's scripts (rq_*.lua); scripts.py prepends it to each of them.
--
-- Layout (keys.py): per instance, under the key base P:{I}: — rq:queue (list of queued run hex ids, oldest
-- first), rq:sched (hash: entry = the instance's ready-stream entry, active = the run in hand), rq:run:<hex>
-- (hash: a run's record), rq:done (string: ended run hex ids, newest first), rq:events (stream). Outside the
-- slot: P:rq:ready (stream of instances with work, read by the coordinators' consumer group).

-- Append encoded events (argv[first..]) to an instance's stream, capped near maxlen; the last id, or false.
local function append_events(stream, maxlen, ttl, argv, first)
  local last = false
  for i = first, #argv do
    last = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', argv[i])
  end
  if last and tonumber(ttl) > 0 then
    redis.call('PEXPIRE', stream, ttl)
  end
  return last
end

-- The next queued run whose record still exists (a record deleted under the queue is skipped), or false.
local function pop_run(base, queue)
  while true do
    local hex = redis.call('LPOP', queue)
    if not hex then
      return false
    end
    if redis.call('EXISTS', base .. 'rq:run:' .. hex) == 1 then
      return hex
    end
  end
end

-- Mark run `hex` as started by coordinator `coord`: attempts + 1 (crashes + 1 when it is taken over from a
-- coordinator that died). Returns what the coordinator needs to run it.
local function begin_run(base, sched, hex, coord, now, crashed)
  local run = base .. 'rq:run:' .. hex
  local attempts = redis.call('HINCRBY', run, 'att', 1)
  local crashes
  if crashed then
    crashes = redis.call('HINCRBY', run, 'crash', 1)
  else
    crashes = tonumber(redis.call('HGET', run, 'crash') or '0')
  end
  redis.call('HSET', run, 'state', 'running', 'coord', coord)
  redis.call('HSETNX', run, 'start', now)
  redis.call('HSET', sched, 'active', hex)
  local f = redis.call('HMGET', run, 'wf', 'sig', 'ck', 'cancel', 'after')
  local input = redis.call('GET', base .. 'rq:in:' .. hex)
  return {hex, attempts, crashes, f[1], f[2], input, f[3], f[4], f[5]}
end

-- Every key of one run: its record (a hash of short fields, so Redis keeps it a compact listpack), its input
-- (while it has not ended), its result and its metadata (strings: either may be long).
local function run_keys(base, hex)
  return base .. 'rq:run:' .. hex, base .. 'rq:in:' .. hex, base .. 'rq:res:' .. hex, base .. 'rq:meta:' .. hex
end

-- Close a run's record with its final state and result. It is kept result_ttl ms, and only the `keep` newest
-- ended runs of an instance are kept at all, so 1,000 runs of one instance leave a bounded number of keys.
local function end_run(base, done, hex, state, result, now, checkpoint, result_ttl, keep)
  local run, input, res, meta = run_keys(base, hex)
  redis.call('HSET', run, 'state', state, 'end', now)
  if checkpoint then
    -- the instance's own checkpoint ids are '<instance>@<suffix>': the record keeps the suffix alone ('cks'; the
    -- instance is in the key), 20 bytes less in every kept run record; an id of the user's own stays whole
    local instance = string.match(base, '{([^{}]*)}:$')
    if instance and string.sub(checkpoint, 1, #instance + 1) == instance .. '@' then
      redis.call('HSET', run, 'cks', string.sub(checkpoint, #instance + 2))
    else
      redis.call('HSET', run, 'ckpt', checkpoint)
    end
  end
  redis.call('HDEL', run, 'cancel', 'sig', 'ck')  -- what only a run in progress needs
  redis.call('DEL', input)
  redis.call('SET', res, result, 'PX', result_ttl)
  redis.call('PEXPIRE', run, result_ttl)
  redis.call('PEXPIRE', meta, result_ttl)
  -- rq:done is the ended runs' hex ids, newest first, concatenated (16 characters each): a string costs far less
  -- than a list of one or two short elements, which is what most instances have
  local ended = hex .. (redis.call('GET', done) or '')
  local limit = tonumber(keep) * 16
  if #ended > limit then
    for i = limit + 1, #ended, 16 do
      redis.call('DEL', run_keys(base, string.sub(ended, i, i + 15)))
    end
    ended = string.sub(ended, 1, limit)
  end
  redis.call('SET', done, ended, 'PX', result_ttl)
end

-- Take the instance's entry off the ready stream (acknowledged and deleted); if runs are still queued, give it
-- a fresh entry, so any coordinator can take the instance at once.
local function reschedule(ready, group, queue, sched, instance)
  local entry = redis.call('HGET', sched, 'entry')
  if entry then
    redis.call('XACK', ready, group, entry)
    redis.call('XDEL', ready, entry)
  end
  redis.call('HDEL', sched, 'active')
  if redis.call('LLEN', queue) > 0 then
    redis.call('HSET', sched, 'entry', redis.call('XADD', ready, '*', 'i', instance))
  else
    redis.call('DEL', sched)
  end
end

-- An instance going idle: give its event stream back the room Redis preallocated for new entries. Redis 7
-- allocates a stream's newest node at 4 KB and keeps it so while the node has room, which made a small idle
-- instance's stream cost 4.7 KB instead of 1.7; COPY writes an exact-size duplicate. Only while the stream is
-- small (a node holds 100 entries), where the copy is one memcpy; a long stream's nodes are mostly full.
local function compact_events(stream, spare)
  if redis.call('XLEN', stream) <= 100 and redis.call('COPY', stream, spare, 'REPLACE') == 1 then
    redis.call('RENAME', spare, stream)
  end
end
