-- mark_use.lua: the health check's read of one node (snapshot.lua's
-- reply), after restarting the idle clock (a in Encodings, lib.lua) of
-- the interactive grants its scan saw in use, so that a busy node's run
-- stays one round trip. idle.lua writes the rest of the clock.
--
-- KEYS as snapshot.lua (KEYS[2] res, the only one written).
-- --
-- ARGV[1] the GPUs the scan saw idle (comma-joined)  ARGV[2] granularity ms
--
-- A grant is in use when any GPU of it is not named idle (a GPU the scan
-- did not see is never idle). Every reservation of such a grant that is
-- handed out and not expired restarts its clock, when its clock is
-- ARGV[2] old or older, or its owner was warned about its current spell
-- (that spell is over). Batch reservations (in bres) have no clock.
-- Returns {'ok', then node_snapshot's parts (lib.lua)}.
local res = KEYS[2]
local idle, every = set_of(split(ARGV[1])), tonumber(ARGV[2])
local now = now_ms()

local held, used = {}, {}
local flat = redis.call('HGETALL', res)
for i = 1, #flat, 2 do
  local r = decode_res(flat[i + 1], false)
  if r and r.q == '' and not expired(r, now) then
    held[flat[i]] = r
    if not idle[flat[i]] then used[r.t] = true end
  end
end
for uuid, r in pairs(held) do
  local since = math.max(r.a or 0, r.s)
  if used[r.t] and (now - since >= every or r.w == since) then
    r.a = now
    redis.call('HSET', res, uuid, encode_res(r))
  end
end

local snap = node_snapshot(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
table.insert(snap, 1, 'ok')
return snap
