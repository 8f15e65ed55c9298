-- flags.lua: replace a node's health-check findings.
--
-- KEYS[1] flags (hash gpu uuid or "node" -> JSON {m=message, t=ms})
-- --
-- ARGV[1..] pairs: gpu uuid ("" for the node), message
--
-- Returns the number of findings stored.
local flags = KEYS[1]
local now = now_ms()
redis.call('DEL', flags)
local n = 0
for i = 1, #ARGV, 2 do
  local field = ARGV[i]
  if field == '' then field = 'node' end
  redis.call('HSET', flags, field, cjson.encode({m = ARGV[i + 1], t = now}))
  n = n + 1
end
return n
