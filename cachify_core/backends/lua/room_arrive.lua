-- A timed entry's published delivery arrived: confirm its hand-over once: room_arrive.
--
-- KEYS     as room_lib.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  entry id the delivery carries
-- ARGV[3]  SETTINGS (room_lib.lua): started_ttl_ms is how long the claim is remembered
-- returns  {status, held, 0}: status 2 claimed (hand-over confirmed, payload deleted, id
--          remembered as started), 3 duplicate (claimed before), 6 unknown (no such hand-over)
local entry = ARGV[2]
local _, _, _, started_ttl = settings(ARGV[3])
prune()
local status = 6
if redis.call('ZSCORE', STARTED, entry) then
  status = 3
elseif redis.call('ZSCORE', HANDED, entry) then
  redis.call('ZREM', HANDED, entry)
  redis.call('ZREM', UNTIL, entry)
  redis.call('HDEL', PARKED, entry)
  redis.call('ZREM', SLOTS, '#' .. entry)  -- a slot hand-over claimed this way frees its slot
  redis.call('ZADD', STARTED, now + started_ttl, entry)
  status = 2
end
return reply(status, settle(nil), 0, {})
