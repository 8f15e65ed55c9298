-- violations_read.lua: a node's violation records last seen at or after a
-- time, oldest first.
--
-- KEYS[1] viol  KEYS[2] violt
-- ARGV[1] since (ms)
--
-- Read only. Returns {'ok', {id, record JSON}...}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local out = {'ok'}
if #ids == 0 then return out end
-- HMGET in chunks: unpack has a limit on its arguments.
for first = 1, #ids, 1000 do
  local chunk = {}
  for n = first, math.min(first + 999, #ids) do table.insert(chunk, ids[n]) end
  local recs = redis.call('HMGET', KEYS[1], unpack(chunk))
  for n, id in ipairs(chunk) do
    if recs[n] then
      table.insert(out, id)
      table.insert(out, recs[n])
    end
  end
end
return out
