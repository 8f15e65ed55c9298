-- leave.lua: leave a node's queue and give back what the entry held.
--
-- KEYS[1] q  KEYS[2] qe  KEYS[3] qx  KEYS[4] res
-- --
-- ARGV[1] entry id
--
-- Returns {'ok', 1} when the entry existed, {'ok', 0} otherwise (leaving
-- twice is fine).
if leave_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]) then return {'ok', 1} end
return {'ok', 0}
