-- Lease one slot of a pool: prune expired leases, then add ours if there is room.
--
-- KEYS[1]  pool            "{<prefix><key>-pool}"          sorted set: token -> lease end (unix ms)
-- KEYS[2]  waiting flag    "{<prefix><key>-pool}:waiting"
-- ARGV[1]  token of the would-be holder
-- ARGV[2]  max_size (>= 1)
-- ARGV[3]  lease lifetime in ms; "0" = never expires (scored NO_EXPIRY)
-- ARGV[4]  waiting-flag lifetime in ms; "0" = the caller will not wait
-- returns  1 if a slot is now leased to ARGV[1], 0 if the pool is full. A token that already
--          holds a live slot keeps it, its lease renewed (a redelivered run whose token is
--          derived from its delivery takes over its dead predecessor's slot instead of a second)
local NO_EXPIRY = 4503599627370496  -- 2^52 ms: beyond any real lease end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  if ARGV[4] ~= '0' then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  end
  return 0
end
local ends = NO_EXPIRY
if ARGV[3] ~= '0' then
  ends = now + tonumber(ARGV[3])
end
redis.call('ZADD', KEYS[1], ends, ARGV[1])
-- the set itself lives as long as its longest lease, so an abandoned pool leaves nothing
local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
if last >= NO_EXPIRY then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], last)
end
return 1
