-- violation_kills.lua: write how the kills violations.lua handed out went,
-- so that a record says what happened to each process, not only that it
-- was to be killed.
--
-- KEYS[1] viol (hash id -> record)  KEYS[2] kills (zset "id|pid|start")
-- ARGV[1] JSON list of {id (the record's "kind|gpu|user|first seen"),
-- pid, start, t (the claim's time, ms), o (sigterm, sigkill, ended,
-- not_same, failed), sent (a signal went out), e (what failed)}.
--
-- Only the claim itself is written, and only while it has no outcome (or
-- one of 'unknown', from a later run that found it late): a later claim
-- of the same process is left alone. A kill that sent no signal gives its
-- place under kills_per_hour back.
-- Returns {'ok', the number of claims written}.
local viol, kills = KEYS[1], KEYS[2]
local written = 0
for _, k in ipairs(cjson.decode(ARGV[1])) do
  -- the record is open under "kind|gpu|user", or closed under its id
  local open, first = string.match(k.id, '^(.*)|(%d+)$')
  local field, rec
  if open then
    local raw = redis.call('HGET', viol, open)
    if raw then
      rec = cjson.decode(raw)
      if rec.f == tonumber(first) then field = open else rec = nil end
    end
    if not rec then
      raw = redis.call('HGET', viol, k.id)
      if raw then field, rec = k.id, cjson.decode(raw) end
    end
  end
  if rec then
    for _, a in ipairs(rec.a) do
      local p = a.w == 'kill' and a.p[1]
      if p and p[1] == k.pid and p[2] == k.start and a.t == k.t and (a.o == 'pending' or a.o == 'unknown') then
        a.o, a.d = k.o, nil
        if k.e and k.e ~= '' then a.e = k.e end
        redis.call('HSET', viol, field, cjson.encode(rec))
        written = written + 1
        -- a claim with its time is the latest of its process: its member
        -- of kills is this claim's
        if not k.sent then redis.call('ZREM', kills, open .. '|' .. k.pid .. '|' .. k.start) end
        break
      end
    end
  end
end
return {'ok', written}
