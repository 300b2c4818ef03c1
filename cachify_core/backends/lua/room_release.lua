-- Give back a slot and hand the free slots to the oldest parked entries: room_release.
--
-- KEYS     as room_lib.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  token of the caller
-- ARGV[3]  max_size (>= 1)
-- ARGV[4]  slot_ttl_ms: lease of the reservations made
-- ARGV[5]  handover_lease_ms
-- ARGV[6]  started_ttl_ms
-- ARGV[7]  most hand-overs this call makes
-- returns  {released, held, 0, id1, payload1, ...}: released 1 if the token held a live slot
--          (0: expired or never taken; nothing of anyone else's is removed), held: entries
--          the room still holds, then the hand-overs made, for the caller to publish
local ends = redis.call('ZSCORE', SLOTS, ARGV[2])
local released = 0
if ends then
  redis.call('ZREM', SLOTS, ARGV[2])
  if tonumber(ends) > now then
    released = 1
  end
end
prune()
local out = {}
hand_free(tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7]), out)
keep_slots()
if #out == 0 and released == 1 then
  -- nobody parked: wake a blocking pool() waiter, as pool_release.lua does
  local waiting_ms = redis.call('PTTL', WAITING)
  if waiting_ms > 0 then
    redis.call('LPUSH', WAKE, '1')
    redis.call('LTRIM', WAKE, 0, 63)
    redis.call('PEXPIRE', WAKE, waiting_ms)
  end
end
local conf = ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. ARGV[6]
return reply(released, settle(conf), 0, out)
