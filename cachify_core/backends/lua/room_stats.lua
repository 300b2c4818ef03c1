-- What a waiting room holds (read-only): room_stats.
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- returns  {parked, oldest parked entry's wait in ms (0 if none), hand-overs not yet claimed, timed,
--          copies watching a running claim}
local oldest = redis.call('ZRANGE', ROOM, 0, 0, 'WITHSCORES')[2]
local wait_ms = 0
if oldest then
  wait_ms = math.max(0, now - math.floor(tonumber(oldest)))
end
-- a hand-over whose reservation ran out is parked again (the next call moves it back in line)
local back = redis.call('ZCOUNT', UNTIL, '-inf', now)
return {
  redis.call('ZCARD', ROOM) + back,
  wait_ms,
  redis.call('ZCARD', HANDED) - back,
  redis.call('ZCARD', TIMED),
  redis.call('HLEN', WATCH),
}
