-- Give back a slot and hand the free slots to the oldest parked entries: room_release.
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  token of the caller
-- ARGV[3]  SETTINGS (room_core.lua); max_size >= 0; slot_ttl_ms is the lease of the
--          reservations made
-- ARGV[4]  most hand-overs this call makes
-- ARGV[5]  the reservation the token's run claimed, or "": that claim is finished (copies of
--          it that arrive later are duplicates, a copy kept watching it is dropped)
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
local function wake()
  -- nobody parked: wake a blocking pool() waiter, as pool_release.lua does
  local waiting_ms = redis.call('PTTL', WAITING)
  if waiting_ms > 0 then
    redis.call('LPUSH', WAKE, '1')
    redis.call('LTRIM', WAKE, 0, 63)
    redis.call('PEXPIRE', WAKE, waiting_ms)
  end
end
local claimed = ARGV[5]
if claimed == '' then
  -- the common case: nobody is parked, nothing to hand over (as pool_release.lua); one call
  -- tells whether anything else is held (timed, handed over) to count
  local others = redis.call('EXISTS', ROOM, TIMED, HANDED)
  if others == 0 or redis.call('EXISTS', ROOM) == 0 then
    keep_slots()
    if released == 1 then
      wake()
    end
    if others == 0 then
      return {released, 0, 0}
    end
    return {released, redis.call('ZCARD', TIMED) + redis.call('ZCARD', HANDED), 0}
  end
end
--@room_lib
if claimed ~= '' and redis.call('HGET', CLAIMS, claimed) == ARGV[2] then
  redis.call('HSET', CLAIMS, claimed, '')
  resolve_watch(claimed)
end
prune()
local out = {}
local max_size, slot_ttl, lease = settings(ARGV[3])
hand_free(max_size, slot_ttl, lease, tonumber(ARGV[4]), out)
keep_slots()
if #out == 0 and released == 1 then
  wake()
end
return reply(released, settle(ARGV[3]), 0, out)
