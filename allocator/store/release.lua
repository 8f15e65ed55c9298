-- release.lua: end reservations matching an owner, kinds, GPUs, job or
-- token; optionally also the owner's queue entries.
--
-- KEYS[1] res  KEYS[2] mru  KEYS[3] hist  KEYS[4] q  KEYS[5] qe  KEYS[6] qx
-- KEYS[7] req  this request's stored reply: req:ID, or breq:ID when the
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
-- Returns (see Replies in lib.lua) {'ok', "u1,u2" (released),
-- {uuid, reservation, ...} (refused), {entry id, queue entry, ...}
-- (dequeued), {uuid, index, ...}: the registered index of each released
-- or refused GPU, so that callers name GPUs as users know them without
-- reading the registration or scanning the GPUs, {uuid, reservation, ...}:
-- the released interactive reservations that named a job of their own (a
-- Slurm placeholder), so that callers cancel it without reading first},
-- or a NOPERM
-- error, before any write, when a matching reservation is a batch one and
-- the caller may not write batch reservations.
-- Named GPUs held by another user are refused, never released, whatever
-- their kind.
local k = {res = KEYS[1], mru = KEYS[2], hist = KEYS[3], q = KEYS[4], qe = KEYS[5], qx = KEYS[6],
           req = KEYS[7]}
k.bres, k.policy = node_key(k.res, 'bres'), node_key(k.res, 'policy')
local user, kinds, ids, job = ARGV[1], set_of(split(ARGV[2])), split(ARGV[3]), ARGV[4]
local token = tonumber(ARGV[5])
local dequeue = ARGV[6] == '1'
local ttl = tonumber(ARGV[7])

local done = stored_reply(k.req)
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
      refused[#refused + 1] = uuid
      refused[#refused + 1] = encode_res(r)
    end
  elseif r and not expired(r, now) and r.q == '' and (any_kind or kinds[r.k]) and (job == '' or r.j == job)
     and (token == 0 or r.t == token) then
    if not interactive(r.k) and not may_write(k.bres) then return noperm(k.bres) end
    ending[#ending + 1] = uuid
  end
end

local pol = load_policy(k.policy)
reclaim(k, res, now, pol)
local holds = {}
for _, uuid in ipairs(ending) do
  local r = res[uuid]
  if interactive(r.k) and r.j and r.j ~= '' then
    holds[#holds + 1] = uuid
    holds[#holds + 1] = encode_res(r)
  end
  free(k, uuid, r, now, 'released', pol)
end
local dequeued = {}
if dequeue then
  for _, id in ipairs(redis.call('ZRANGE', k.q, 0, -1)) do
    local raw = redis.call('HGET', k.qe, id)
    local e = raw and decode_entry(raw)
    if e and (user == '' or e.u == user) and (any_kind or kinds[e.k]) then
      leave_queue(k.q, k.qe, k.qx, k.res, id)
      dequeued[#dequeued + 1] = id
      dequeued[#dequeued + 1] = raw
    end
  end
end
local shown = {}
for _, uuid in ipairs(ending) do shown[#shown + 1] = uuid end
for i = 1, #refused, 2 do shown[#shown + 1] = refused[i] end
local indices = {}
if #shown > 0 then
  for i, v in ipairs(hmget(node_key(k.res, 'gpus'), shown)) do
    if v then
      indices[#indices + 1] = shown[i]
      indices[#indices + 1] = gpu_index(v)
    end
  end
end
local reply = {'ok', table.concat(ending, ','), refused, dequeued, indices, holds}
-- Kept for a retry only when something changed: a release that changed
-- nothing gives the same answer again, and a refused one leaves no trace.
if #ending > 0 or #dequeued > 0 then
  store_reply(k.req, reply, ttl)
end
return reply
