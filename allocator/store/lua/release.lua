-- release.lua: end reservations matching an owner, kinds, GPUs, job or token.
--
-- KEYS[1] res  KEYS[2] mru  KEYS[3] hist
-- KEYS[4] req  this request's stored reply
-- --
-- ARGV[1] user ("" = anyone's: admins and scheduler hooks)
-- ARGV[2] kinds (comma-joined, "" = any)  ARGV[3] ids ("" = all matching)
-- ARGV[4] job id ("" = any)  ARGV[5] token (0 = any)
-- ARGV[6] history max age ms  ARGV[7] history max records  ARGV[8] reply ttl ms
--
-- Returns JSON: {released="u1,u2", refused="<JSON list of reservations>"}
-- Named GPUs held by another user are refused, never released, whatever
-- their kind: naming someone else's batch GPU or queue hold is reported, not
-- passed over as if there were nothing to release.
local k = {res = KEYS[1], mru = KEYS[2], hist = KEYS[3], req = KEYS[4]}
local user, kinds, ids, job = ARGV[1], set_of(split(ARGV[2])), split(ARGV[3]), ARGV[4]
local token = tonumber(ARGV[5])
local max_age, max_n, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

local done = redis.call('GET', k.req)
if done then return done end

local now = now_ms()
local named = #ids > 0
local res = {}
if named then
  -- Only the named GPUs are read: decoding every reservation of the node
  -- would cost more than the rest of the release.
  local raws = redis.call('HMGET', k.res, unpack(ids))
  for i, uuid in ipairs(ids) do
    if raws[i] then res[uuid] = cjson.decode(raws[i]) end
  end
else
  res = decode_hash(k.res)
end
reclaim(k, res, now, max_age, max_n)
if not named then
  for uuid, _ in pairs(res) do ids[#ids + 1] = uuid end
  table.sort(ids)
end
local any_kind = next(kinds) == nil
local released, refused = {}, {}
for _, uuid in ipairs(ids) do
  local r = res[uuid]
  if r and user ~= '' and r.u ~= user then
    if named then
      r.gpu = uuid
      refused[#refused + 1] = r
    end
  elseif r and r.q == '' and (any_kind or kinds[r.k]) and (job == '' or r.j == job)
     and (token == 0 or r.t == token) then
    free(k, uuid, r, now, 'released', max_age, max_n)
    released[#released + 1] = uuid
  end
end
local reply = {released = table.concat(released, ',')}
if #refused > 0 then reply.refused = cjson.encode(refused) end
reply = cjson.encode(reply)
redis.call('SET', k.req, reply, 'PX', ttl)
return reply
