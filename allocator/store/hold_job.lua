-- hold_job.lua: record the scheduler job that stands for an interactive
-- hold (a Slurm placeholder job), so status shows it and release, expiry
-- and the health check can cancel it.
--
-- KEYS[1] res   interactive reservations (hash uuid -> reservation)
-- --
-- ARGV[1] user  ARGV[2] token  ARGV[3] job id  ARGV[4] ids (comma-joined)
-- ARGV[5] the job id the hold must record now ('' = any): a placeholder
--         that replaces a vanished one takes its place only while the
--         hold still names the vanished one
--
-- Writing the same job id twice has the effect of writing it once, so no
-- request id is needed. All or nothing: every GPU must still be held,
-- unexpired, by user under token (and name ARGV[5]), else nothing
-- changes: a hold released or lapsed meanwhile is never written back.
-- Returns (see Replies in lib.lua) {'ok'} or {'lost', uuid}.
local res = KEYS[1]
local user, token, job, ids = ARGV[1], tonumber(ARGV[2]), ARGV[3], split(ARGV[4])
local was = ARGV[5] or ''
local now = now_ms()

local held = {}
for i, uuid in ipairs(ids) do
  local raw = redis.call('HGET', res, uuid)
  local r = raw and decode_res(raw, false)
  if not r or r.u ~= user or r.t ~= token or r.q ~= '' or expired(r, now) or (was ~= '' and r.j ~= was) then
    return {'lost', uuid}
  end
  held[i] = r
end
for i, uuid in ipairs(ids) do
  held[i].j = job
  redis.call('HSET', res, uuid, encode_res(held[i]))
end
return {'ok'}
