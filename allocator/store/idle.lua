-- idle.lua: one health-check run's findings about idle interactive
-- reservations, applied together (see Encodings in lib.lua: a, w).
--
-- KEYS[1] res  KEYS[2] mru  KEYS[3] hist
-- Read, not declared (see lib.lua): policy.
-- --
-- ARGV[1] JSON {"warned": [[uuid, token, idle since ms], ...],
--         "release": [[uuid, token, idle since ms], ...]}
--
-- Each entry names one GPU's reservation by its fencing token, so a
-- reservation that ended and was granted again meanwhile is left alone.
-- The clocks of reservations in use were restarted by the run's
-- snapshot (mark_use.lua).
-- warned: its owner was told about the idle spell that began then.
-- release: a manual reservation idle past the site's limit ends, only
-- if every GPU of it is still idle since the time the decision was made
-- from: a keep-alive or a use seen by another check in between restarted
-- a clock and keeps the whole grant.
-- Returns {'ok', "u1,u2" (released)}.
local k = {res = KEYS[1], mru = KEYS[2], hist = KEYS[3]}
local req = cjson.decode(ARGV[1])
local now = now_ms()

local function idle_since(r)
  return math.max(r.a or 0, r.s)
end

-- live returns the GPU's reservation when it is still the one the check
-- judged: the same grant, handed out, not expired.
local function live(uuid, token)
  local raw = redis.call('HGET', k.res, uuid)
  local r = raw and decode_res(raw, false)
  if r and r.t == token and r.q == '' and not expired(r, now) then return r end
  return nil
end

for _, e in ipairs(req.warned or {}) do
  local r = live(e[1], e[2])
  if r and idle_since(r) == e[3] then
    r.w = e[3]
    redis.call('HSET', k.res, e[1], encode_res(r))
  end
end
-- A grant is released whole or not at all: a keep-alive of one of its
-- GPUs in between keeps every GPU of it, so the owner is never told of a
-- release that left part of the grant held.
local kept, judged = {}, {}
for _, e in ipairs(req.release or {}) do
  local r = live(e[1], e[2])
  if r and r.k == 'manual' and idle_since(r) == e[3] then
    judged[#judged + 1] = {e[1], r}
  else
    kept[e[2]] = true
  end
end
local released = {}
local pol
for _, j in ipairs(judged) do
  if not kept[j[2].t] then
    pol = pol or load_policy(node_key(k.res, 'policy'))
    free(k, j[1], j[2], now, 'reclaimed_idle', pol)
    released[#released + 1] = j[1]
  end
end
return {'ok', table.concat(released, ',')}
