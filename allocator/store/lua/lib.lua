-- lib.lua: helpers shared by every operation. The Go side puts a generated
-- prelude (MAX_GPUS, POLICY_FIELDS, POLICY_DEFAULTS: the Go constants) and
-- this file at the top of the function library, and in front of each
-- operation's body for the EVAL fallback.
--
-- Encodings used by all operations:
--   reservation (field = GPU UUID; interactive kinds in hash res, batch
--     kinds, every other one, in hash bres), JSON:
--     k kind, u user, id uid, j job id, n note, t fencing token,
--     s start ms, e expiry ms (0 = none), h heartbeat ms (0 = none),
--     r restart count, b boot id, q queue entry holding it ("" = handed out)
--   registered GPU (hash gpus, field = UUID): "index minor name"
--   mru hash: field UUID = last release ms (least-recently-used order),
--     field "user\nUUID" = when that user last released it (most recent)
--   policy hash: POLICY_FIELDS -> integer (ms, or a count)
--   lists travel as comma-joined strings: cjson cannot tell an empty list
--   from an empty object, and UUIDs and user names never contain commas.
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

-- record appends a finished reservation to the history, bounded by count
-- at every write and by age at about every 64th (picked by the end time's
-- low bits): each extra call costs as much as the rest of a release.
local function record(hist, uuid, r, ended, how, pol)
  local rec = cjson.encode({g = uuid, k = r.k, u = r.u, j = r.j, s = r.s, e = ended, x = how, t = r.t})
  redis.call('ZADD', hist, ended, rec)
  redis.call('ZREMRANGEBYRANK', hist, 0, -pol.history_max_records - 1)
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

-- purge_queue drops queue entries whose waiter stopped sending heartbeats.
-- Their partial holds expire at the same moment and are reclaimed above.
local function purge_queue(q, qe, now)
  local ids = redis.call('ZRANGE', q, 0, -1)
  local live = {}
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', qe, id)
    local e = raw and cjson.decode(raw)
    if not e or e.h + e.to <= now then
      redis.call('ZREM', q, id)
      redis.call('HDEL', qe, id)
    else
      live[#live + 1] = id
    end
  end
  return live
end

-- leave_queue removes a queue entry and frees the GPUs it held so far
-- (holds are interactive: they live in res). Returns the entry, or nil
-- when there was none.
local function leave_queue(q, qe, res, id)
  local raw = redis.call('HGET', qe, id)
  redis.call('ZREM', q, id)
  redis.call('HDEL', qe, id)
  if not raw then return nil end
  local e = cjson.decode(raw)
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
-- flat hash, policy flat hash}.
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
