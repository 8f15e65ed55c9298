-- snapshot.lua: everything `status` needs about one node, in one round trip.
--
-- KEYS[1] gpus  KEYS[2] res  KEYS[3] bres  KEYS[4] mru  KEYS[5] q
-- KEYS[6] qe  KEYS[7] flags  KEYS[8] policy
--
-- Read only (registered with the no-writes flag, called with FCALL_RO).
-- Returns {'ok', then node_snapshot's parts (lib.lua)}.
local snap = node_snapshot(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
table.insert(snap, 1, 'ok')
return snap
