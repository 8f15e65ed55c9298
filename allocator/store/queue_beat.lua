-- queue_beat.lua: keep a queue entry (and the GPUs it holds so far) alive.
--
-- KEYS[1] q  KEYS[2] qe  KEYS[3] res
-- --
-- ARGV[1] entry id
--
-- Returns {'ok', the 1-based position among live entries}, or
-- {'not_queued'} when the entry is gone.
local q, qe, res = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local now = now_ms()
local live = purge_queue(q, qe, now)
local pos = 0
for i, e in ipairs(live) do if e == id then pos = i end end
if pos == 0 then return {'not_queued'} end
local e = decode_entry(redis.call('HGET', qe, id))
e.h = now
redis.call('HSET', qe, id, encode_entry(e))
for _, uuid in ipairs(split(e.a)) do
  local raw = redis.call('HGET', res, uuid)
  local r = raw and decode_res(raw, false)
  if r and r.q == id then
    r.e = now + e.to
    redis.call('HSET', res, uuid, encode_res(r))
  end
end
return {'ok', pos}
