-- Count a pool's live slots (read-only: expired leases are skipped, not pruned).
--
-- KEYS[1]  pool            "{<prefix><key>-pool}"
-- returns  number of leases ending after now
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
