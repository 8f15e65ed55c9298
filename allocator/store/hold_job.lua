-- hold_job.lua: record the scheduler job that stands for an interactive
-- hold (a Slurm placeholder job), so status shows it and release, expiry
-- and the health check can cancel it.
--
-- KEYS[1] res   interactive reservations (hash uuid -> reservation)
-- --
-- ARGV[1] user  ARGV[2] token  ARGV[3] job id  ARGV[4] ids (comma-joined)
--
-- Writing the same job id twice has the effect of writing it once, so no
-- request id is needed. All or nothing: every GPU must still be held by
-- user under token, else nothing changes.
-- Returns (see Replies in lib.lua) {'ok'} or {'lost', uuid}.
local res = KEYS[1]
local user, token, job, ids = ARGV[1], tonumber(ARGV[2]), ARGV[3], split(ARGV[4])

local held = {}
for i, uuid in ipairs(ids) do
  local raw = redis.call('HGET', res, uuid)
  local r = raw and decode_res(raw, false)
  if not r or r.u ~= user or r.t ~= token or r.q ~= '' then
    return {'lost', uuid}
  end
  held[i] = r
end
for i, uuid in ipairs(ids) do
  held[i].j = job
  redis.call('HSET', res, uuid, encode_res(held[i]))
end
return {'ok'}
