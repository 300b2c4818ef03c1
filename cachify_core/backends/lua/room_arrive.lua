-- A timed entry's published delivery arrived: claim its hand-over once: room_arrive.
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  token: the claim's lease in this room's slot set (slot_ttl_ms; renew it with
--          pool_extend, end it with room_release naming the claimed id)
-- ARGV[3]  id of this delivery, should it be kept as the copy watching a running claim
-- ARGV[4]  its payload
-- ARGV[5]  SETTINGS (room_core.lua)
-- ARGV[6]  the timed entry id the delivery carries (its reservation)
-- returns  {status, held, parked_new}: status 2 claimed (hand-over confirmed, payload deleted,
--          the token holds the claim), 7 taken over (the claimer died or passed the claim on
--          unfinished: the token holds it now, as its successor), 3 duplicate (the claim runs or finished; the first copy arriving while
--          it runs is kept, due at once if the claimer dies), 6 unknown (no such hand-over)
--@room_lib
local token, copy, payload, rid = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local _, slot_ttl, _, started_ttl = settings(ARGV[5])
local conf = keep_size(ARGV[5])  -- a kept copy needs the settings for the sweep
prune()
local status, parked_new = 6, 0
local function take()
  redis.call('ZADD', SLOTS, now + slot_ttl, token)
  keep_slots()
  claim(rid, token, started_ttl)
end
if redis.call('HEXISTS', CLAIMS, rid) == 1 then
  local verdict, stored = claimed_again(rid, 't', copy, payload)
  if verdict == 'duplicate' then
    status, parked_new = 3, stored
  else
    take()
    status = 7
  end
elseif redis.call('ZSCORE', HANDED, rid) then
  redis.call('ZREM', HANDED, rid)
  redis.call('ZREM', UNTIL, rid)
  redis.call('HDEL', PARKED, rid)
  redis.call('ZREM', SLOTS, '#' .. rid)  -- a slot hand-over claimed this way gives its slot up
  take()
  status = 2
end
return reply(status, settle(conf), parked_new, {})
