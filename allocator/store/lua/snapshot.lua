-- snapshot.lua: everything `status` needs about one node, in one round trip.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] bres  KEYS[4] mru  KEYS[5] q
-- KEYS[6] qe  KEYS[7] flags  KEYS[8] policy
--
-- Read only (registered with the no-writes flag, called with FCALL_RO).
-- Returns an array: {now ms, gpus flat hash, res flat hash, bres flat hash,
-- last release per GPU as a flat hash, queue ids in order, queue entries
-- flat hash, flags flat hash, policy flat hash}.
local gpus = redis.call('HGETALL', KEYS[1])
local rel = {}
if #gpus > 0 then
  local ids = {}
  for i = 1, #gpus, 2 do ids[#ids + 1] = gpus[i] end
  local times = hmget(KEYS[4], ids)
  for i, id in ipairs(ids) do
    if times[i] then
      rel[#rel + 1] = id
      rel[#rel + 1] = times[i]
    end
  end
end
return {now_ms(), gpus, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), rel,
        redis.call('ZRANGE', KEYS[5], 0, -1), redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7]),
        redis.call('HGETALL', KEYS[8])}
