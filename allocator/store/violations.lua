-- violations.lua: merge the health check's sightings of violations into the
-- node's records and claim the actions now due, in one step, so that two
-- checks running at once neither tell nor kill twice.
--
-- KEYS[1] viol (hash id -> record)  KEYS[2] violt (zset id by last seen)
-- KEYS[3] kills (zset "id|pid|start" by time of the kill)
-- --
-- ARGV[1] the run as JSON: now (ms, the node's clock), gap (ms: a record
-- not seen for longer is closed), steps ({a, after} in order), renotify
-- (ms), kills_per_hour, pending (ms: how long a kill claim may wait for
-- its outcome), max_age (ms), max_records, seen: the sightings
-- {k, g, i, u, h, j, m (model guess), p = {{pid, name, start}},
-- kill = {{pid, start}}}.
--
-- A record's id is "kind|gpu|user|first seen"; the open record of a
-- (kind, gpu, user) is stored under "kind|gpu|user" until it is closed.
-- A kill is claimed as one action per process, {w = 'kill', t, p =
-- {{pid, start}}, o = 'pending', d = t + pending}; the check writes the
-- outcome (violation_kills.lua). A claim still pending after d is
-- 'unknown': the check that made it stopped before saying how it went.
-- Returns {'ok', one JSON per sighting: {id, r = the record, due = the
-- notify/exec steps claimed, kill = the PIDs to kill, limited = the PIDs
-- the hourly limit spares}}.
local viol, violt, kills = KEYS[1], KEYS[2], KEYS[3]
local run = cjson.decode(ARGV[1])
local now = run.now
local MAX_PROCS = 32

-- the processes killed this hour
redis.call('ZREMRANGEBYSCORE', kills, '-inf', '(' .. (now - 3600000))
local budget = run.kills_per_hour - redis.call('ZCARD', kills)

local function last_done(rec, what)
  local last
  for _, a in ipairs(rec.a) do
    if a.w == what then last = a.t end
  end
  return last
end

-- the index in rec.a of the kill claim of a process, if any
local function kill_claim(rec, pid, start)
  for n, a in ipairs(rec.a) do
    if a.w == 'kill' then
      for _, p in ipairs(a.p) do
        if p[1] == pid and p[2] == start then return n end
      end
    end
  end
end

-- Outcomes after which a process seen again is claimed again: nothing
-- was done to it, or no one knows. A claim without an outcome predates
-- outcomes and counts as done.
local RETRY = {not_same = true, failed = true, unknown = true}

local function archive(open, rec)
  local id = open .. '|' .. rec.f
  redis.call('HSET', viol, id, cjson.encode(rec))
  redis.call('ZADD', violt, rec.l, id)
  redis.call('HDEL', viol, open)
  redis.call('ZREM', violt, open)
end

local out = {'ok'}
for _, s in ipairs(run.seen) do
  local open = s.k .. '|' .. s.g .. '|' .. s.u
  local rec
  local raw = redis.call('HGET', viol, open)
  if raw then
    rec = cjson.decode(raw)
    if now - rec.l > run.gap then
      archive(open, rec)
      rec = nil
    end
  end
  if not rec then
    rec = {k = s.k, g = s.g, u = s.u, f = now, p = {}, a = {}}
  end
  rec.i, rec.h, rec.j, rec.l = s.i, s.h, s.j, math.max(rec.l or now, now)
  if s.m ~= '' then rec.m = s.m end
  local known = {}
  for _, p in ipairs(rec.p) do known[p.pid .. ':' .. (p.start or 0)] = true end
  for _, p in ipairs(s.p) do
    if not known[p.pid .. ':' .. (p.start or 0)] then
      table.insert(rec.p, p)
      if #rec.p > MAX_PROCS then table.remove(rec.p, 1) end
    end
  end

  local due, kill, limited = {}, {}, {}
  for _, st in ipairs(run.steps) do
    if now - rec.f >= st.after then
      if st.a == 'kill' then
        local pids = {}
        for _, p in ipairs(s.kill) do
          local n = kill_claim(rec, p[1], p[2])
          local claim = n and rec.a[n]
          if claim and claim.o == 'pending' and now >= claim.d then claim.o, claim.d = 'unknown', nil end
          if not claim or RETRY[claim.o] then
            if budget > 0 then
              budget = budget - 1
              redis.call('ZADD', kills, now, open .. '|' .. p[1] .. '|' .. p[2])
              -- the latest try replaces an earlier one: one claim per process
              if n then table.remove(rec.a, n) end
              table.insert(pids, p)
              table.insert(kill, p[1])
            else
              table.insert(limited, p[1])
            end
          end
        end
        for _, p in ipairs(pids) do
          table.insert(rec.a, {w = 'kill', t = now, p = {p}, o = 'pending', d = now + run.pending})
        end
        if #limited > 0 then
          local last = last_done(rec, 'kill_limited')
          if not last or now - last >= run.renotify then
            local spared = {}
            for _, pid in ipairs(limited) do table.insert(spared, {pid, 0}) end
            table.insert(rec.a, {w = 'kill_limited', t = now, p = spared})
          end
        end
      else
        local last = last_done(rec, st.a)
        if not last or now - last >= run.renotify then
          table.insert(due, st.a)
          table.insert(rec.a, {w = st.a, t = now})
        end
      end
    end
  end
  redis.call('HSET', viol, open, cjson.encode(rec))
  redis.call('ZADD', violt, rec.l, open)
  local reply = {id = open .. '|' .. rec.f, r = rec}
  if #due > 0 then reply.due = due end
  if #kill > 0 then reply.kill = kill end
  if #limited > 0 then reply.limited = limited end
  table.insert(out, cjson.encode(reply))
end

-- bounds, as the history's: by age, then by count
local old = redis.call('ZRANGEBYSCORE', violt, '-inf', '(' .. (now - run.max_age))
for _, id in ipairs(old) do
  redis.call('HDEL', viol, id)
  redis.call('ZREM', violt, id)
end
local over = redis.call('ZCARD', violt) - run.max_records
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', violt, 0, over - 1)) do
    redis.call('HDEL', viol, id)
    redis.call('ZREM', violt, id)
  end
end
return out
