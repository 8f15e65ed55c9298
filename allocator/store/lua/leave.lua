-- leave.lua: leave a node's queue and give back what the entry held.
--
-- KEYS[1] q  KEYS[2] qe  KEYS[3] res
-- --
-- ARGV[1] entry id
--
-- Returns 1 when the entry existed, 0 otherwise (leaving twice is fine).
local q, qe, res = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local raw = redis.call('HGET', qe, id)
redis.call('ZREM', q, id)
redis.call('HDEL', qe, id)
if not raw then return 0 end
for _, uuid in ipairs(split(cjson.decode(raw).a)) do
  local r = redis.call('HGET', res, uuid)
  if r and cjson.decode(r).q == id then redis.call('HDEL', res, uuid) end
end
return 1
