-- enqueue.lua: join a node's FCFS queue.
--
-- KEYS[1] q  queue order (zset entry -> seq)  KEYS[2] qe  entries
-- KEYS[3] qx  queue expiry (zset entry -> ms)  KEYS[4] meta
-- Read, not declared (see lib.lua): policy.
-- --
-- ARGV[1] entry id  ARGV[2] kind  ARGV[3] user  ARGV[4] count
-- ARGV[5] ids (comma-joined)  ARGV[6] heartbeat timeout ms (bounded by the
-- policy's queue_timeout_ms)
--
-- Joining twice with one id keeps the first place. Returns {'ok', the
-- 1-based position among live entries}.
local q, qe, qx, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local timeout = math.min(tonumber(ARGV[6]), load_policy(node_key(q, 'policy')).queue_timeout_ms)
local now = now_ms()
purge_queue(q, qe, qx, now)
if redis.call('HEXISTS', qe, id) == 0 then
  local seq = redis.call('HINCRBY', meta, 'qseq', 1)
  redis.call('ZADD', q, seq, id)
  redis.call('ZADD', qx, now + timeout, id)
  redis.call('HSET', qe, id, encode_entry(queue_entry(ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], now, timeout)))
end
return {'ok', queue_position(q, id)}
