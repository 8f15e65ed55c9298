-- lib.lua: helpers shared by every script. The Go side prepends this file
-- to each script body, so every script stays one self-contained EVALSHA.
--
-- Encodings used by all scripts:
--   reservation (hash res, field = GPU UUID), JSON:
--     k kind, u user, id uid, j job id, n note, t fencing token,
--     s start ms, e expiry ms (0 = none), h heartbeat ms (0 = none),
--     r restart count, b boot id, q queue entry holding it ("" = handed out)
--   registered GPU (hash gpus, field = UUID): "index minor name"
--   mru hash: field UUID = last release ms (least-recently-used order),
--     field "user\nUUID" = when that user last released it (most recent)
--   lists travel as comma-joined strings: cjson cannot tell an empty list
--   from an empty object, and UUIDs and user names never contain commas.

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

local function gpu_index(v)
  return tonumber(string.sub(v, 1, string.find(v, ' ', 1, true) - 1))
end

local function decode_hash(key)
  local m = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do m[flat[i]] = cjson.decode(flat[i + 1]) end
  return m
end

-- record appends a finished reservation to the history, bounded by count
-- at every write and by age at about every 64th (picked by the end time's
-- low bits): each extra call costs as much as the rest of a release.
local function record(hist, uuid, r, ended, how, max_age, max_n)
  local rec = cjson.encode({g = uuid, k = r.k, u = r.u, j = r.j, s = r.s, e = ended, x = how, t = r.t})
  redis.call('ZADD', hist, ended, rec)
  redis.call('ZREMRANGEBYRANK', hist, 0, -max_n - 1)
  if ended % 64 == 0 then
    redis.call('ZREMRANGEBYSCORE', hist, '-inf', '(' .. (ended - max_age))
  end
end

-- free ends one reservation at time `at`. Holds taken for a queue entry
-- that never got its full request were never used: no history, no LRU.
local function free(k, uuid, r, at, how, max_age, max_n)
  redis.call('HDEL', k.res, uuid)
  if r.q == nil or r.q == '' then
    record(k.hist, uuid, r, at, how, max_age, max_n)
    redis.call('HSET', k.mru, uuid, at, r.u .. '\n' .. uuid, at)
  end
end

-- reclaim frees every expired reservation (manual past expiry, run lease
-- without heartbeat): expiry needs no janitor, the next writer does it.
local function reclaim(k, res, now, max_age, max_n)
  for uuid, r in pairs(res) do
    if r.e > 0 and r.e <= now then
      free(k, uuid, r, r.e, 'expired', max_age, max_n)
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
