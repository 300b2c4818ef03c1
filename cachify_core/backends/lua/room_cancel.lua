-- Drop an entry whose delivery will not run (a cache hit, a drop): room_cancel.
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  entry id (parked, timed, or handed over)
-- ARGV[3]  SETTINGS (room_core.lua); max_size is the pool's (0: a timed room)
-- ARGV[4]  most hand-overs this call makes
-- returns  {existed, held, 0, id1, payload1, ...}: existed 1 if the room held the entry (its
--          payload is deleted, its reservation freed), held: entries left; then the hand-overs
--          of the freed slot, for the caller to publish
--@room_lib
local entry = ARGV[2]
prune()
local existed = 0
for _, key in ipairs({ROOM, TIMED, HANDED}) do
  existed = math.max(existed, redis.call('ZREM', key, entry))
end
redis.call('ZREM', UNTIL, entry)
redis.call('HDEL', PARKED, entry)
redis.call('ZREM', SLOTS, '#' .. entry)
keep_slots()
local out = {}
local max_size, slot_ttl, lease = settings(ARGV[3])
hand_free(max_size, slot_ttl, lease, tonumber(ARGV[4]), out)
return reply(existed, settle(keep_size(ARGV[3])), 0, out)
