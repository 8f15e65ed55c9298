-- forget.lua: remove a node from the store, for a decommissioned or
-- renamed node.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] bres  KEYS[4] mru  KEYS[5] q
-- KEYS[6] qe  KEYS[7] flags  KEYS[8] policy  KEYS[9] hist  KEYS[10] qx
-- (Every key is declared: only root programs forget.)
-- --
-- ARGV[1] force ("1": forget the node even while it holds reservations)
--
-- A node that holds a reservation that has not expired is kept unless
-- forced: its GPUs may still be in use. The counters (meta) stay: a fencing
-- token must never be handed out twice, should the node come back. Replies
-- kept for retries expire by themselves. The registry of nodes is outside
-- the node's Cluster slot; the caller removes the node from it.
--
-- Returns {'ok', 1 when the node was forgotten else 0, then node_snapshot's
-- parts (lib.lua) as the node was before}.
local k = {gpus = KEYS[1], res = KEYS[2], bres = KEYS[3], mru = KEYS[4], q = KEYS[5], qe = KEYS[6],
           flags = KEYS[7], policy = KEYS[8], hist = KEYS[9], qx = KEYS[10]}
local snap = node_snapshot(k.gpus, k.res, k.bres, k.mru, k.q, k.qe, k.flags, k.policy)
if ARGV[1] ~= '1' then
  local now = snap[1]
  for _, r in pairs(load_all(k)) do
    if not expired(r, now) then
      table.insert(snap, 1, 0)
      table.insert(snap, 1, 'ok')
      return snap
    end
  end
end
redis.call('DEL', k.gpus, k.res, k.bres, k.mru, k.q, k.qe, k.flags, k.policy, k.hist, k.qx)
table.insert(snap, 1, 1)
table.insert(snap, 1, 'ok')
return snap
