-- Renew the caller's slot lease if it still holds one.
--
-- KEYS[1]  pool            "{<prefix><key>-pool}"
-- ARGV[1]  token of the caller
-- ARGV[2]  new remaining lifetime in ms (> 0)
-- returns  1 if renewed, 0 if the caller holds no live slot
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  return 0
end
local ends = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], ends, ARGV[1])
if redis.call('PTTL', KEYS[1]) >= 0 then
  local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIREAT', KEYS[1], last)
end
return 1
