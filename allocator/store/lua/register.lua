-- register.lua: record the GPUs a node has.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] mru  KEYS[4] hist
-- --
-- ARGV[1] force ("1": the list replaces what is registered)
-- ARGV[2] history max age ms  ARGV[3] history max records
-- ARGV[4..] groups of four: uuid, index, minor, name
--
-- Without force, new and changed GPUs are added and a registered GPU that is
-- absent is kept (it may be off the bus for a moment) unless another GPU now
-- has its index (it was replaced). A dropped GPU's reservation is ended and
-- recorded. Returns the number of GPUs added, changed or dropped.
local k = {gpus = KEYS[1], res = KEYS[2], mru = KEYS[3], hist = KEYS[4]}
local force = ARGV[1] == '1'
local max_age, max_n = tonumber(ARGV[2]), tonumber(ARGV[3])

local new, indexes = {}, {}
for i = 4, #ARGV, 4 do
  new[ARGV[i]] = ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3]
  indexes[tonumber(ARGV[i + 1])] = true
end

local now = now_ms()
local cur = raw_hash(k.gpus)
local changed = 0
for uuid, g in pairs(cur) do
  if not new[uuid] and (force or indexes[gpu_index(g)]) then
    redis.call('HDEL', k.gpus, uuid)
    local raw = redis.call('HGET', k.res, uuid)
    if raw then free(k, uuid, cjson.decode(raw), now, 'released', max_age, max_n) end
    changed = changed + 1
  end
end
for uuid, g in pairs(new) do
  if cur[uuid] ~= g then
    redis.call('HSET', k.gpus, uuid, g)
    changed = changed + 1
  end
end
return changed
