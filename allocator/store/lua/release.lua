-- release.lua: end reservations matching an owner, kinds, GPUs, job or
-- token; optionally also the owner's queue entries.
--
-- KEYS[1] res  KEYS[2] mru  KEYS[3] hist  KEYS[4] q  KEYS[5] qe
-- KEYS[6] req  this request's stored reply: req:ID, or breq:ID when the
--              release may end batch reservations
-- Read, not declared (see lib.lua): bres (written when a batch reservation
-- ends), policy, gpus.
-- --
-- ARGV[1] user ("" = anyone's: admins and scheduler hooks)
-- ARGV[2] kinds (comma-joined, "" = any)  ARGV[3] ids ("" = all matching)
-- ARGV[4] job id ("" = any)  ARGV[5] token (0 = any)
-- ARGV[6] "1": also remove the user's (or everyone's) queue entries of
--         those kinds, with the GPUs they hold so far
-- ARGV[7] reply ttl ms
--
-- Returns JSON: {released="u1,u2", refused="<JSON list of reservations>",
-- dequeued="<JSON list of queue entries with their id>",
-- indices={u1=0, ...}: the registered index of each released or refused
-- GPU, so that callers name GPUs as users know them without reading the
-- registration or scanning the GPUs}, or a NOPERM
-- error, before any write, when a matching reservation is a batch one and
-- the caller may not write batch reservations.
-- Named GPUs held by another user are refused, never released, whatever
-- their kind.
local k = {res = KEYS[1], mru = KEYS[2], hist = KEYS[3], q = KEYS[4], qe = KEYS[5], req = KEYS[6]}
k.bres, k.policy = node_key(k.res, 'bres'), node_key(k.res, 'policy')
local user, kinds, ids, job = ARGV[1], set_of(split(ARGV[2])), split(ARGV[3]), ARGV[4]
local token = tonumber(ARGV[5])
local dequeue = ARGV[6] == '1'
local ttl = tonumber(ARGV[7])

local done = redis.call('GET', k.req)
if done then return done end

local now = now_ms()
local named = #ids > 0
local res
if named then
  -- Only the named GPUs are read: decoding every reservation of the node
  -- would cost more than the rest of the release.
  res = load_named(k, ids)
else
  res = load_all(k)
  for uuid, _ in pairs(res) do ids[#ids + 1] = uuid end
  table.sort(ids)
end

-- Decide before writing anything, so that a caller refused one write
-- changes nothing at all.
local any_kind = next(kinds) == nil
local ending, refused = {}, {}
for _, uuid in ipairs(ids) do
  local r = res[uuid]
  if r and not expired(r, now) and user ~= '' and r.u ~= user then
    -- Whatever its kind: naming someone else's batch GPU or queue hold is
    -- reported, not passed over as if there were nothing to release.
    if named then
      r.gpu = uuid
      refused[#refused + 1] = r
    end
  elseif r and not expired(r, now) and r.q == '' and (any_kind or kinds[r.k]) and (job == '' or r.j == job)
     and (token == 0 or r.t == token) then
    if not interactive(r.k) and not may_write(k.bres) then return noperm(k.bres) end
    ending[#ending + 1] = uuid
  end
end

local pol = load_policy(k.policy)
reclaim(k, res, now, pol)
for _, uuid in ipairs(ending) do
  free(k, uuid, res[uuid], now, 'released', pol)
end
local dequeued = {}
if dequeue then
  for _, id in ipairs(redis.call('ZRANGE', k.q, 0, -1)) do
    local raw = redis.call('HGET', k.qe, id)
    local e = raw and cjson.decode(raw)
    if e and (user == '' or e.u == user) and (any_kind or kinds[e.k]) then
      leave_queue(k.q, k.qe, k.res, id)
      e.id = id
      dequeued[#dequeued + 1] = e
    end
  end
end
local reply = {released = table.concat(ending, ',')}
local shown = {}
for _, uuid in ipairs(ending) do shown[#shown + 1] = uuid end
for _, r in ipairs(refused) do shown[#shown + 1] = r.gpu end
if #shown > 0 then
  reply.indices = {}
  for i, v in ipairs(hmget(node_key(k.res, 'gpus'), shown)) do
    if v then reply.indices[shown[i]] = gpu_index(v) end
  end
end
if #refused > 0 then reply.refused = cjson.encode(refused) end
if #dequeued > 0 then reply.dequeued = cjson.encode(dequeued) end
reply = cjson.encode(reply)
-- Kept for a retry only when something changed: a release that changed
-- nothing gives the same answer again, and a refused one leaves no trace.
if #ending > 0 or #dequeued > 0 then
  redis.call('SET', k.req, reply, 'PX', ttl)
end
return reply
