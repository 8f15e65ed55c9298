-- lib.lua: helpers shared by every operation. The Go side puts a generated
-- prelude (MAX_GPUS, POLICY_FIELDS, POLICY_DEFAULTS: the Go constants) and
-- this file at the top of the function library, and in front of each
-- operation's body for the EVAL fallback.
--
-- Encodings: every record the operations store, with its constructor
-- below (the Go decoders are in wire.go):
--   reservation (hash res for interactive kinds, hash bres for batch
--     kinds, every other one; field = GPU UUID), made by reservation(), JSON:
--     k kind, u user, id uid, j job id, n note, t fencing token,
--     s start ms, e expiry ms (0 = none), h heartbeat ms (0 = none),
--     r restart count, b boot id, q queue entry holding it ("" = handed out),
--     rq the request id of the grant (absent or "" for queue holds and
--     reservations written before request ids were kept here)
--     a last sign of use ms and w the idle spell last warned about (its
--     start ms), both interactive only and absent until mark_use.lua
--     (a), idle.lua (w) or keep_alive.lua (a) writes them
--   queue entry (hash qe, field = entry id), made by queue_entry(), JSON:
--     k kind, u user, c count, g named GPUs (list), a GPUs held so far
--     (list), t enqueued ms, h last heartbeat ms, to heartbeat timeout ms
--   queue order (sorted set q): entry id scored by a per-node sequence
--     (field qseq of meta), so the queue is first come, first served and
--     a position is one ZRANK
--   queue expiry (sorted set qx): entry id scored by when it expires
--     without a heartbeat (h + to), so dropped waiters are one range read;
--     q, qe and qx always hold the same ids (sync_queue builds qx for a
--     queue written before qx existed)
--   history record (sorted set hist, scored by end ms), made by
--     history_record(), JSON: g GPU UUID, k kind, u user, j job id,
--     s start ms, e end ms, x how it ended (released, expired,
--     taken_over, reclaimed_idle), t fencing token, and the reservation's
--     a and w when it had them (its idle clock at the end)
--   finding (hash flags, field = GPU UUID or "node"), made by finding(),
--     JSON: m message, t ms
--   registered GPU (hash gpus, field = UUID): "index minor name"
--   mru hash: field UUID = last release ms (least-recently-used order),
--     field "user\nUUID" = when that user last released it (most recent)
--   meta hash: token = the last fencing token, qseq = the last queue place
--   policy hash: POLICY_FIELDS -> integer (ms, or a count)
--   stored reply (string req:ID or breq:ID): the operation's reply as a
--     JSON array, kept for retries of the same request id by releases and
--     batch grants (an interactive grant's retry is answered from the
--     reservations, which keep its request id)
--   lists travel as comma-joined strings: UUIDs, ids and user names never
--     contain commas.
--
-- Replies: every operation returns a flat array whose first element is
-- a status: 'ok' followed by the operation's results, or a refusal's code
-- ('shortage', 'pending', 'lost', ...) followed by its details. A
-- reservation inside a reply is its stored encoding; a list of
-- reservations or queue entries is a flat array of (id, encoding) pairs.
-- Only a call that is malformed or refused by the ACL (NOPERM) gets an
-- error reply.
--
-- Keys: an operation declares (KEYS) the node's keys it writes for an
-- interactive caller. FCALL demands write permission on every declared
-- key, so the keys the CLI role may only read (gpus, bres, policy) are
-- not declared but named with node_key: they carry the same hash tag, so
-- they live in the declared keys' Cluster slot. Redis checks the caller's
-- ACL on every command an operation runs.

local function node_key(declared, name)
  return string.match(declared, '^.-}:') .. name
end

-- interactive names the kinds whose leases the store ends itself: the only
-- place that does. Every other kind is a batch scheduler's; a request says
-- it is one with its batch flag (allocate.lua), so no scheduler is named
-- here and a new one needs no change to the store.
local function interactive(kind)
  return kind == 'run' or kind == 'manual'
end

-- res_hash is the hash a reservation of this kind lives in.
local function res_hash(k, kind)
  if interactive(kind) then return k.res end
  return k.bres
end

-- may_write reports whether the caller may change key. Scripts are not
-- rolled back, so an operation asks before its first write rather than
-- stop halfway at a refused one. Redis 6 has neither this call nor
-- read-only key permissions: there a caller may write whatever it reads.
local function may_write(key)
  if not redis.acl_check_cmd then return true end
  return redis.acl_check_cmd('HDEL', key, 'f')
end

local function noperm(key)
  return redis.error_reply('NOPERM this user may not change ' .. key)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s)
  local out = {}
  if s == nil or s == '' then return out end
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end
  return out
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function raw_hash(key)
  local m = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- hmget reads fields of a hash, MAX_GPUS at a time, so that no unpack()
-- ever grows with what a caller sent.
local function hmget(key, fields)
  local out = {}
  for first = 1, #fields, MAX_GPUS do
    local last = math.min(first + MAX_GPUS - 1, #fields)
    local part = redis.call('HMGET', key, unpack(fields, first, last))
    for i = first, last do out[i] = part[i - first + 1] end
  end
  return out
end

local function gpu_index(v)
  return tonumber(string.sub(v, 1, string.find(v, ' ', 1, true) - 1))
end

-- load_policy reads the node's policy; a missing or bad field has its
-- default.
local function load_policy(key)
  local vals = redis.call('HMGET', key, unpack(POLICY_FIELDS))
  local p = {}
  for i, f in ipairs(POLICY_FIELDS) do
    local v = tonumber(vals[i])
    if not v or v <= 0 then v = POLICY_DEFAULTS[f] end
    p[f] = v
  end
  return p
end

-- reservation makes a reservation record (see Encodings).
local function reservation(kind, user, uid, job, note, token, start, expiry, beat, restart, boot, entry, request)
  return {k = kind, u = user, id = uid, j = job, n = note, t = token, s = start, e = expiry, h = beat,
          r = restart, b = boot, q = entry, rq = request}
end

local function encode_res(r)
  return cjson.encode(r)
end

-- decode_res reads a stored reservation, or nil when it does not decode
-- or sits in the wrong hash: the CLI role may write anything into res, so
-- an entry there that claims a batch kind is not believed.
local function decode_res(raw, from_bres)
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' or type(r.k) ~= 'string' or interactive(r.k) == from_bres then
    return nil
  end
  return r
end

-- queue_entry makes a queue entry record (see Encodings).
local function queue_entry(kind, user, count, ids, now, timeout)
  return {k = kind, u = user, c = count, g = ids, a = '', t = now, h = now, to = timeout}
end

local function encode_entry(e)
  return cjson.encode(e)
end

-- decode_entry reads a stored queue entry, or nil when it does not decode.
local function decode_entry(raw)
  local ok, e = pcall(cjson.decode, raw)
  if not ok or type(e) ~= 'table' or type(e.h) ~= 'number' or type(e.to) ~= 'number' then return nil end
  return e
end

-- history_record encodes a finished reservation (see Encodings).
local function history_record(uuid, r, ended, how)
  return cjson.encode({g = uuid, k = r.k, u = r.u, j = r.j, s = r.s, e = ended, x = how, t = r.t, a = r.a, w = r.w})
end

-- finding encodes a health-check finding (see Encodings).
local function finding(message, at)
  return cjson.encode({m = message, t = at})
end

-- stored_reply returns the reply a request id already got, or nil.
local function stored_reply(key)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- store_reply keeps a reply for retries of the same request id.
local function store_reply(key, reply, ttl)
  redis.call('SET', key, cjson.encode(reply), 'PX', ttl)
end

-- load_all decodes every reservation of the node, batch and interactive.
local function load_all(k)
  local m = {}
  local flat = redis.call('HGETALL', k.bres)
  for i = 1, #flat, 2 do m[flat[i]] = decode_res(flat[i + 1], true) end
  flat = redis.call('HGETALL', k.res)
  for i = 1, #flat, 2 do
    if not m[flat[i]] then m[flat[i]] = decode_res(flat[i + 1], false) end
  end
  return m
end

-- load_named decodes the reservations of the given GPUs only.
local function load_named(k, ids)
  local m = {}
  local b, r = hmget(k.bres, ids), hmget(k.res, ids)
  for i, uuid in ipairs(ids) do
    m[uuid] = (b[i] and decode_res(b[i], true)) or (r[i] and decode_res(r[i], false)) or nil
  end
  return m
end

-- granted_before answers the retry of an interactive grant from the
-- reservations it made (each keeps its request id), or returns nil when
-- none holds it: a retry arriving after they ended is a new request. The
-- GPUs are in index order; what the grant took over is only reported the
-- first time (interactive grants take nothing over).
local function granted_before(res, request, user, gpus)
  local mine, token, expiry = {}, 0, 0
  for uuid, r in pairs(res) do
    if r.rq == request and r.u == user and r.q == '' then
      mine[#mine + 1] = uuid
      token, expiry = r.t, r.e
    end
  end
  if #mine == 0 then return nil end
  local idx = {}
  for _, uuid in ipairs(mine) do idx[uuid] = gpus[uuid] and gpu_index(gpus[uuid]) or math.huge end
  table.sort(mine, function(a, b) return idx[a] < idx[b] end)
  return {'ok', table.concat(mine, ','), token, expiry, {}}
end

-- record appends a finished reservation to the history, bounded by count
-- at every write and by age at about every 64th (picked by the end time's
-- low bits): each extra call costs as much as the rest of a release.
local function record(hist, uuid, r, ended, how, pol)
  -- Trim only when over the bound: counting costs less than a trim that
  -- finds nothing to remove, which is what almost every release found.
  if redis.call('ZADD', hist, ended, history_record(uuid, r, ended, how)) == 1
     and redis.call('ZCARD', hist) > pol.history_max_records then
    redis.call('ZREMRANGEBYRANK', hist, 0, -pol.history_max_records - 1)
  end
  if ended % 64 == 0 then
    redis.call('ZREMRANGEBYSCORE', hist, '-inf', '(' .. (ended - pol.history_max_age_ms))
  end
end

-- free ends one reservation at time `at`. Holds taken for a queue entry
-- that never got its full request were never used: no history, no LRU.
local function free(k, uuid, r, at, how, pol)
  redis.call('HDEL', res_hash(k, r.k), uuid)
  if r.q == nil or r.q == '' then
    record(k.hist, uuid, r, at, how, pol)
    redis.call('HSET', k.mru, uuid, at, r.u .. '\n' .. uuid, at)
  end
end

-- expired: a manual reservation past its expiry, or a run lease (or queue
-- hold) without a recent heartbeat. Batch reservations never expire.
local function expired(r, now)
  return r.e > 0 and r.e <= now
end

-- reclaim frees every expired reservation: expiry needs no janitor, the
-- next writer does it.
local function reclaim(k, res, now, pol)
  for uuid, r in pairs(res) do
    if expired(r, now) then
      free(k, uuid, r, r.e, 'expired', pol)
      res[uuid] = nil
    end
  end
end

-- sync_queue builds qx for a queue written by a version without it, in
-- the first operation that finds the queue without it: the queue order's
-- entries, expiring when their stored heartbeat says. Entries that do not
-- decode are dropped.
local function sync_queue(q, qe, qx)
  local n = redis.call('ZCARD', q)
  if n == 0 or redis.call('ZCARD', qx) == n then return end
  redis.call('ZREMRANGEBYRANK', qx, 0, -1)
  for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    local raw = redis.call('HGET', qe, id)
    local e = raw and decode_entry(raw)
    if e then
      redis.call('ZADD', qx, e.h + e.to, id)
    else
      redis.call('ZREM', q, id)
      redis.call('HDEL', qe, id)
    end
  end
end

-- drop_entry removes a queue entry from the queue's three keys; qx first,
-- so that a user whose ACL predates qx is refused before any change.
local function drop_entry(q, qe, qx, id)
  redis.call('ZREM', qx, id)
  redis.call('ZREM', q, id)
  redis.call('HDEL', qe, id)
end

-- purge_queue drops queue entries whose waiter stopped sending heartbeats
-- (one range read of qx: nothing else is read when none expired). Their
-- partial holds expire at the same moment and are reclaimed by reclaim.
local function purge_queue(q, qe, qx, now)
  sync_queue(q, qe, qx)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', qx, '-inf', now)) do
    drop_entry(q, qe, qx, id)
  end
end

-- queue_position is an entry's 1-based place in the queue, 0 when it is
-- not queued.
local function queue_position(q, id)
  local rank = redis.call('ZRANK', q, id)
  if not rank then return 0 end
  return rank + 1
end

-- leave_queue removes a queue entry and frees the GPUs it held so far
-- (holds are interactive: they live in res). Returns the entry, or nil
-- when there was none.
local function leave_queue(q, qe, qx, res, id)
  local raw = redis.call('HGET', qe, id)
  drop_entry(q, qe, qx, id)
  local e = raw and decode_entry(raw)
  if not e then return nil end
  for _, uuid in ipairs(split(e.a)) do
    local r = redis.call('HGET', res, uuid)
    local hold = r and decode_res(r, false)
    if hold and hold.q == id then redis.call('HDEL', res, uuid) end
  end
  return e
end

-- node_snapshot reads everything `status` needs about one node: snapshot.lua
-- returns it, forget.lua returns what it is about to delete. The reply is
-- {now ms, gpus flat hash, res flat hash, bres flat hash, last release per
-- GPU as a flat hash, queue ids in order, queue entries flat hash, flags
-- flat hash, policy flat hash}: snapshot.lua's reply after its status.
local function node_snapshot(gpus_key, res, bres, mru, q, qe, flags, policy)
  local gpus = redis.call('HGETALL', gpus_key)
  local rel = {}
  if #gpus > 0 then
    local ids = {}
    for i = 1, #gpus, 2 do ids[#ids + 1] = gpus[i] end
    local times = hmget(mru, ids)
    for i, id in ipairs(ids) do
      if times[i] then
        rel[#rel + 1] = id
        rel[#rel + 1] = times[i]
      end
    end
  end
  return {now_ms(), gpus, redis.call('HGETALL', res), redis.call('HGETALL', bres), rel,
          redis.call('ZRANGE', q, 0, -1), redis.call('HGETALL', qe), redis.call('HGETALL', flags),
          redis.call('HGETALL', policy)}
end
