-- Park a timed entry, due after a delay: room_park_until.
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  entry id
-- ARGV[3]  payload
-- ARGV[4]  delay in ms from now (>= 0)
-- ARGV[5]  SETTINGS (room_core.lua); max_size >= 0 (timed entries never take slots, and a
--          room's stored size is kept); slot_ttl_ms is the life of the hand-over once due;
--          max_waiting bounds the timed entries
-- ARGV[6]  spacing in ms (>= 0): due no sooner than this after the latest timed entry, so
--          entries waiting for one thing come back one by one, not together
-- returns  {status, held, parked_new}: status 4 parked (or already was: its due time is
--          kept), 5 full (nothing parked)
--@room_lib
local entry = ARGV[2]
local conf = keep_size(ARGV[5])
local _, _, _, _, max_waiting = settings(ARGV[5])
prune()
local status, parked_new = 4, 0
if not redis.call('ZSCORE', TIMED, entry) and not redis.call('ZSCORE', HANDED, entry) then
  if redis.call('ZCARD', TIMED) >= max_waiting then
    status = 5
  else
    local due = now + tonumber(ARGV[4])
    local spacing = tonumber(ARGV[6] or '0')
    if spacing > 0 then
      local tail = redis.call('ZRANGE', TIMED, -1, -1, 'WITHSCORES')[2]
      if tail and tonumber(tail) + spacing > due then
        due = tonumber(tail) + spacing
      end
    end
    redis.call('ZADD', TIMED, due, entry)
    redis.call('HSET', PARKED, entry, ARGV[3])
    parked_new = 1
  end
end
return reply(status, settle(conf), parked_new, {})
