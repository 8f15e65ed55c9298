-- queue_beat.lua: keep a queue entry (and the GPUs it holds so far) alive.
--
-- KEYS[1] q  KEYS[2] qe  KEYS[3] qx  KEYS[4] res
-- --
-- ARGV[1] entry id
--
-- Returns {'ok', the 1-based position among live entries}, or
-- {'not_queued'} when the entry is gone.
local q, qe, qx, res = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local now = now_ms()
purge_queue(q, qe, qx, now)
local pos = queue_position(q, id)
if pos == 0 then return {'not_queued'} end
local e = decode_entry(redis.call('HGET', qe, id))
e.h = now
redis.call('HSET', qe, id, encode_entry(e))
redis.call('ZADD', qx, now + e.to, id)
for _, uuid in ipairs(split(e.a)) do
  local raw = redis.call('HGET', res, uuid)
  local r = raw and decode_res(raw, false)
  if r and r.q == id then
    r.e = now + e.to
    redis.call('HSET', res, uuid, encode_res(r))
  end
end
return {'ok', pos}
