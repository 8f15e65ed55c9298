-- allocate.lua: grant GPUs of one node to one owner, all or nothing.
--
-- KEYS[1] res   interactive reservations (hash uuid -> reservation)
-- KEYS[2] mru   release times per GPU and per user and GPU (see lib.lua)
-- KEYS[3] hist  finished reservations (zset scored by end ms)
-- KEYS[4] meta  counters (hash: token)
-- KEYS[5] q     queue order (zset entry -> seq)
-- KEYS[6] qe    queue entries (hash entry -> JSON)
-- KEYS[7] req   this request's stored reply (a retry returns it unchanged);
--               req:ID for interactive kinds, breq:ID for batch kinds
-- Read, not declared (see lib.lua): gpus (hash uuid -> "index minor name"),
-- bres (batch reservations; written for batch kinds), policy.
-- --
-- ARGV[1] kind  ARGV[2] user  ARGV[3] uid  ARGV[4] job id
-- ARGV[5] count (0 when by ids)  ARGV[6] ids  ARGV[7] preferred ids
-- ARGV[8] excluded ids (memory in use)  ARGV[9] lease ms (0 for batch;
-- bounded by the policy: run_lease_ms for run, max_duration_ms for manual)
-- ARGV[10] note  ARGV[11] restart count  ARGV[12] boot id
-- ARGV[13] queue entry ("" when not waiting)  ARGV[14] reply ttl ms
-- ARGV[15] "1": a run taking back the GPUs it held before the store lost
--          them, which does not wait behind the queue
-- ARGV[16] "1": a batch request, a scheduler job's (any kind but run and
--          manual; see lib.lua)
--
-- Returns JSON:
--   {ok=1, gpus="u1,u2", token=N, expires=ms (0 for batch), taken="<JSON list of replaced reservations>"}
--   {ok=0, err="shortage", requested, available, unreserved, waiting, conflicts="<JSON>"}
--   {ok=0, err="pending", allocated="u1", position=1}   (queue head, partial)
--   {ok=0, err="unknown_gpu", value=uuid} | {ok=0, err="not_registered"}
--   {ok=0, err="not_queued"}
--   {ok=0, err="bad_kind", value=kind}   (the batch flag contradicts the kind)
-- or a NOPERM error, before any write, when the caller may not write the
-- batch reservations a batch kind needs.
local k = {res = KEYS[1], mru = KEYS[2], hist = KEYS[3], meta = KEYS[4], q = KEYS[5], qe = KEYS[6], req = KEYS[7]}
k.gpus, k.bres, k.policy = node_key(k.res, 'gpus'), node_key(k.res, 'bres'), node_key(k.res, 'policy')
local kind, user, uid, job = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local count = tonumber(ARGV[5])
local ids, prefer, exclude = split(ARGV[6]), split(ARGV[7]), set_of(split(ARGV[8]))
local lease, note, restart, boot = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11]), ARGV[12]
local entry = ARGV[13]
local ttl = tonumber(ARGV[14])
local retake = ARGV[15] == '1'
local batch = ARGV[16] == '1'

local done = redis.call('GET', k.req)
if done then return done end
if batch == interactive(kind) then return cjson.encode({ok = 0, err = 'bad_kind', value = kind}) end
if batch and not may_write(k.bres) then return noperm(k.bres) end

local gpus = raw_hash(k.gpus)
if next(gpus) == nil then return cjson.encode({ok = 0, err = 'not_registered'}) end
for _, id in ipairs(ids) do
  if not gpus[id] then return cjson.encode({ok = 0, err = 'unknown_gpu', value = id}) end
end

local now = now_ms()
local pol = load_policy(k.policy)
if kind == 'run' then
  lease = math.min(lease, pol.run_lease_ms)
elseif not batch then
  lease = math.min(lease, pol.max_duration_ms)
end
local live = purge_queue(k.q, k.qe, now)
local res = load_all(k)
reclaim(k, res, now, pol)

-- Interactive requests take turns: only the queue's head may take GPUs
-- while anyone waits. Batch jobs got their GPUs from the scheduler and
-- never wait behind interactive users.
local waiting, head = 0, false
if not batch and not retake then
  if entry ~= '' then
    local pos = 0
    for i, id in ipairs(live) do if id == entry then pos = i end end
    if pos == 0 then return cjson.encode({ok = 0, err = 'not_queued'}) end
    head = (pos == 1)
    waiting = pos - 1
  else
    waiting = #live
  end
end

local function mine(r)
  if batch then return r.k == kind and r.j == job end
  return entry ~= '' and r.q == entry
end

local take, taken, conflicts, unreserved = {}, {}, {}, 0
if #ids > 0 then
  for _, id in ipairs(ids) do
    local r = res[id]
    if r and mine(r) then
      take[#take + 1] = id
    elseif r and batch and r.k == kind and r.q == '' then
      -- The scheduler never gives one GPU to two jobs: this job's GPU
      -- still held by another job of the same scheduler is stale.
      take[#take + 1] = id
      taken[#taken + 1] = id
    elseif r then
      conflicts[#conflicts + 1] = {gpu = id, holder = r}
    elseif exclude[id] then
      conflicts[#conflicts + 1] = {gpu = id, unreserved = true}
      unreserved = unreserved + 1
    else
      take[#take + 1] = id
    end
  end
else
  local own, free_list = {}, {}
  for uuid, r in pairs(res) do
    if mine(r) then own[#own + 1] = uuid end
  end
  for uuid, _ in pairs(gpus) do
    if not res[uuid] then
      if exclude[uuid] then
        unreserved = unreserved + 1
      else
        free_list[#free_list + 1] = uuid
      end
    end
  end
  local prank, idx = {}, {}
  for i, id in ipairs(prefer) do prank[id] = i end
  for _, uuid in ipairs(free_list) do idx[uuid] = gpu_index(gpus[uuid]) end
  for _, uuid in ipairs(own) do idx[uuid] = gpu_index(gpus[uuid]) end
  local mru, rel = {}, {}
  if #free_list > 0 then
    local fields, n, mine_prefix = {}, #free_list, user .. '\n'
    for i, uuid in ipairs(free_list) do
      fields[i] = mine_prefix .. uuid
      fields[n + i] = uuid
    end
    local times = hmget(k.mru, fields)
    for i, uuid in ipairs(free_list) do
      mru[uuid] = tonumber(times[i]) or 0
      rel[uuid] = tonumber(times[n + i]) or 0
    end
  end
  -- Preferred first; then this user's most recently used GPUs, newest
  -- first; then the rest least recently released first (never = oldest).
  table.sort(free_list, function(a, b)
    local pa, pb = prank[a] or math.huge, prank[b] or math.huge
    if pa ~= pb then return pa < pb end
    if mru[a] ~= mru[b] then return mru[a] > mru[b] end
    if rel[a] ~= rel[b] then return rel[a] < rel[b] end
    return idx[a] < idx[b]
  end)
  table.sort(own, function(a, b) return idx[a] < idx[b] end)
  for _, uuid in ipairs(own) do
    if #take < count then take[#take + 1] = uuid end
  end
  for _, uuid in ipairs(free_list) do
    if #take < count then take[#take + 1] = uuid end
  end
end

local wanted = (#ids > 0) and #ids or count
if waiting > 0 or #take < wanted then
  if head and #take > 0 then
    -- The head keeps what it can get, so a large request is not starved by
    -- a stream of small ones; the holds expire with its queue entry.
    local e = cjson.decode(redis.call('HGET', k.qe, entry))
    for _, uuid in ipairs(take) do
      if not res[uuid] then
        redis.call('HSET', k.res, uuid, cjson.encode({k = kind, u = user, id = uid, j = job, n = note,
          t = 0, s = now, e = e.h + e.to, h = 0, r = restart, b = boot, q = entry}))
      end
    end
    e.a = table.concat(take, ',')
    redis.call('HSET', k.qe, entry, cjson.encode(e))
    return cjson.encode({ok = 0, err = 'pending', allocated = e.a, position = 1})
  end
  local reply = {ok = 0, err = 'shortage', requested = wanted, available = #take,
                 unreserved = unreserved, waiting = waiting}
  if waiting > 0 then reply.available = 0 end
  if #conflicts > 0 then reply.conflicts = cjson.encode(conflicts) end
  return cjson.encode(reply)
end

local token = redis.call('HINCRBY', k.meta, 'token', 1)
local replaced = {}
for _, uuid in ipairs(taken) do
  local old = res[uuid]
  old.gpu = uuid
  replaced[#replaced + 1] = old
  free(k, uuid, old, now, 'taken_over', pol)
  res[uuid] = nil
end
local expiry, beat = 0, 0
if not batch then expiry = now + lease end
if kind == 'run' then beat = now end
for _, uuid in ipairs(take) do
  local r = res[uuid]
  if r and batch and mine(r) then
    -- A retried or requeued prolog of the same job keeps its GPUs.
    r.t, r.r, r.b = token, restart, boot
  else
    r = {k = kind, u = user, id = uid, j = job, n = note, t = token, s = now,
         e = expiry, h = beat, r = restart, b = boot, q = ''}
  end
  redis.call('HSET', res_hash(k, kind), uuid, cjson.encode(r))
end
if head then
  redis.call('ZREM', k.q, entry)
  redis.call('HDEL', k.qe, entry)
end
local reply = {ok = 1, gpus = table.concat(take, ','), token = token, expires = expiry}
if #replaced > 0 then reply.taken = cjson.encode(replaced) end
reply = cjson.encode(reply)
redis.call('SET', k.req, reply, 'PX', ttl)
return reply
