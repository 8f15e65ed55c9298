-- renew.lua: extend a run lease held with a fencing token.
--
-- KEYS[1] res   interactive reservations (hash uuid -> reservation)
-- Read, not declared (see lib.lua): policy, bres (to name a batch holder).
-- --
-- ARGV[1] user  ARGV[2] token  ARGV[3] lease ms (bounded by the policy's
-- run_lease_ms)  ARGV[4] ids (comma-joined)
--
-- Renewing twice has the effect of renewing once, so no request id is
-- needed. All or nothing: if any GPU is no longer this lease's, none is
-- renewed and the caller must stop using them.
-- Returns (see Replies in lib.lua) {'ok', expires ms} or
-- {'lost', uuid, holder's reservation ("" when none)}.
local res = KEYS[1]
local user, token, lease, ids = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), split(ARGV[4])
lease = math.min(lease, load_policy(node_key(res, 'policy')).run_lease_ms)

local now = now_ms()
local held = {}
for i, uuid in ipairs(ids) do
  local raw = redis.call('HGET', res, uuid)
  local r = raw and decode_res(raw, false)
  if not r then
    -- Not a run lease any more: name the batch job holding it, if any.
    local b = redis.call('HGET', node_key(res, 'bres'), uuid)
    local holder = b and decode_res(b, true)
    return {'lost', uuid, holder and b or ''}
  end
  -- An expired lease nobody reclaimed yet is still ours: the reclaim and
  -- any new grant happen atomically in allocate.lua, never behind our back.
  if r.u ~= user or r.t ~= token or r.q ~= '' then
    return {'lost', uuid, raw}
  end
  held[i] = r
end
for i, uuid in ipairs(ids) do
  local r = held[i]
  r.h, r.e = now, now + lease
  redis.call('HSET', res, uuid, encode_res(r))
end
return {'ok', now + lease}
