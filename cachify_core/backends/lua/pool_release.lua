-- Give back the caller's slot; wake one waiter.
--
-- KEYS[1]  pool            "{<prefix><key>-pool}"
-- KEYS[2]  waiting flag    "{<prefix><key>-pool}:waiting"
-- KEYS[3]  wake list       "{<prefix><key>-pool}:wake"
-- ARGV[1]  token of the caller
-- returns  1 if a live slot was released, 0 if the caller held none (expired, or never leased)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(ends) <= now then
  return 0  -- it had expired: the cap may already have been exceeded; the caller warns
end
-- the set lives as long as its longest remaining lease: a lease without expiry may just have
-- left, and the set must not outlive the others (an abandoned pool leaves nothing)
local NO_EXPIRY = 4503599627370496
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last and tonumber(last) < NO_EXPIRY then
  redis.call('PEXPIREAT', KEYS[1], tonumber(last))
end
local waiting_ms = redis.call('PTTL', KEYS[2])
if waiting_ms > 0 then
  redis.call('LPUSH', KEYS[3], '1')
  -- a few slots may free at once; more pending signals than that only cause spare retries
  redis.call('LTRIM', KEYS[3], 0, 63)
  redis.call('PEXPIRE', KEYS[3], waiting_ms)
end
return 1
