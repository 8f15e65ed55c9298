-- snapshot.lua: everything `status` needs about one node, in one round trip.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] mru  KEYS[4] q  KEYS[5] qe  KEYS[6] flags
--
-- Read only. Returns an array: {now ms, gpus flat hash, res flat hash,
-- last release per GPU as a flat hash, queue ids in order, queue entries
-- flat hash, flags flat hash}.
local gpus = redis.call('HGETALL', KEYS[1])
local rel = {}
if #gpus > 0 then
  local ids = {}
  for i = 1, #gpus, 2 do ids[#ids + 1] = gpus[i] end
  local times = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do
    if times[i] then
      rel[#rel + 1] = id
      rel[#rel + 1] = times[i]
    end
  end
end
return {now_ms(), gpus, redis.call('HGETALL', KEYS[2]), rel, redis.call('ZRANGE', KEYS[4], 0, -1),
        redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}
