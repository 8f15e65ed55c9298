-- keep_alive.lua: an owner says their manual reservations are in use
-- (`canhazgpu reserve --keep-alive`): their idle clock restarts (a in
-- Encodings, lib.lua), as if the health check had seen them used.
--
-- KEYS[1] res
-- --
-- ARGV[1] user  ARGV[2] ids (comma-joined; "" = all the user's)
--
-- Only the user's own manual reservations that are handed out and not
-- expired are touched. All or nothing: when a named GPU is not one of
-- them, nothing changes and it is reported.
-- Returns {'ok', "u1,u2" (kept alive), "u3" (named but not the user's
-- manual reservation; then nothing was kept alive)}.
local res = KEYS[1]
local user, ids = ARGV[1], split(ARGV[2])
local now = now_ms()
local named = #ids > 0
if not named then
  local flat = redis.call('HGETALL', res)
  for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
  table.sort(ids)
end
local kept, held, refused = {}, {}, {}
local raws = hmget(res, ids)
for i, uuid in ipairs(ids) do
  local r = raws[i] and decode_res(raws[i], false)
  if r and r.u == user and r.k == 'manual' and r.q == '' and not expired(r, now) then
    kept[#kept + 1] = uuid
    held[#held + 1] = r
  elseif named then
    refused[#refused + 1] = uuid
  end
end
if #refused > 0 then return {'ok', '', table.concat(refused, ',')} end
for i, uuid in ipairs(kept) do
  held[i].a = now
  redis.call('HSET', res, uuid, encode_res(held[i]))
end
return {'ok', table.concat(kept, ','), ''}
