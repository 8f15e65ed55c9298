-- flags.lua: replace a node's health-check findings.
--
-- KEYS[1] flags (hash gpu uuid or "node" -> finding, see lib.lua)
-- --
-- ARGV[1..] pairs: gpu uuid ("" for the node), message
--
-- Returns {'ok', the number of findings stored}.
local flags = KEYS[1]
local now = now_ms()
redis.call('DEL', flags)
local n = 0
for i = 1, #ARGV, 2 do
  local field = ARGV[i]
  if field == '' then field = 'node' end
  redis.call('HSET', flags, field, finding(ARGV[i + 1], now))
  n = n + 1
end
return {'ok', n}
