-- register.lua: record the GPUs a node has, and the node's policy.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] bres  KEYS[4] mru  KEYS[5] hist
-- KEYS[6] policy
-- (Every key is declared: only root programs register.)
-- --
-- ARGV[1] force ("1": the list replaces what is registered)
-- ARGV[2 .. 1+#POLICY_FIELDS] the policy, in POLICY_FIELDS order
-- then groups of four: uuid, index, minor, name (at most MAX_GPUS)
--
-- Without force, new and changed GPUs are added and a registered GPU that is
-- absent is kept (it may be off the bus for a moment) unless another GPU now
-- has its index (it was replaced). A dropped GPU's reservation is ended and
-- recorded. A node never has more than MAX_GPUS GPUs: a registration that
-- would leave more changes nothing (an error reply, as for a malformed
-- call). Returns {'ok', the number of GPUs added, changed or dropped}.
local k = {gpus = KEYS[1], res = KEYS[2], bres = KEYS[3], mru = KEYS[4], hist = KEYS[5], policy = KEYS[6]}
local force = ARGV[1] == '1'
local first = 2 + #POLICY_FIELDS
local groups = (#ARGV - first + 1) / 4
if groups ~= math.floor(groups) or groups > MAX_GPUS then
  return redis.error_reply(string.format('ERR register: %d arguments after the policy: want groups of four for at most %d GPUs',
    #ARGV - first + 1, MAX_GPUS))
end

local pol, stored = {}, {}
for i, f in ipairs(POLICY_FIELDS) do
  local v = tonumber(ARGV[1 + i])
  if not v or v <= 0 then v = POLICY_DEFAULTS[f] end
  pol[f] = v
  stored[#stored + 1] = f
  stored[#stored + 1] = v
end

local new, indexes = {}, {}
for i = first, #ARGV, 4 do
  new[ARGV[i]] = ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3]
  indexes[tonumber(ARGV[i + 1])] = true
end

-- Decide, and check the bound, before writing anything.
local cur = raw_hash(k.gpus)
local drop, total = {}, 0
for uuid, g in pairs(cur) do
  if not new[uuid] and (force or indexes[gpu_index(g)]) then
    drop[#drop + 1] = uuid
  else
    total = total + 1
  end
end
for uuid, _ in pairs(new) do
  if not cur[uuid] then total = total + 1 end
end
if total > MAX_GPUS then
  return redis.error_reply(string.format('ERR register: the node would have %d GPUs: at most %d are accepted', total, MAX_GPUS))
end

redis.call('HSET', k.policy, unpack(stored))
local now = now_ms()
local changed = 0
for _, uuid in ipairs(drop) do
  redis.call('HDEL', k.gpus, uuid)
  local r = load_named(k, {uuid})[uuid]
  if r then free(k, uuid, r, now, 'released', pol) end
  changed = changed + 1
end
for uuid, g in pairs(new) do
  if cur[uuid] ~= g then
    redis.call('HSET', k.gpus, uuid, g)
    changed = changed + 1
  end
end
return {'ok', changed}
