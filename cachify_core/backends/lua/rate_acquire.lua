-- GCRA check of every limit of one rate limiter (or, on a single server, of several limiters
-- at once: rate_acquire_bounds), all or nothing; optionally consume.
--
-- KEYS[i]     limit i's TAT    "{<prefix><key>-rate}:<count>/<period_ms>ms"
--                              string: theoretical arrival time, server µs; expires at the TAT
-- ARGV[1]     cost of the call (>= 1): how many calls of cost 1 it counts as
-- ARGV[2]     "1" = admit and count the call if every limit allows it, "0" = only look
-- ARGV[1+2i]  limit i's emission interval in µs (>= 1): period / count, rounded up
-- ARGV[2+2i]  limit i's burst (>= 1): calls of cost 1 that may go at once from idle
-- returns     {allowed (1|0), retry_after_ms (0 if allowed; else ms until every limit allows
--             it, rounded up), remaining (calls of cost 1 every limit still allows now),
--             worst (0 if allowed; else the i of the limit that makes it wait longest)}
--
-- A call is allowed by limit i when max(TAT, now) + cost * emission - now <= burst * emission.
-- Nothing is written unless every limit allows it, so a denied call consumes nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local tats = {}
local over, worst = -1, 0
for i = 1, #KEYS do
  local emission = tonumber(ARGV[1 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  tats[i] = tat
  local excess = tat + cost * emission - now - tonumber(ARGV[2 + 2 * i]) * emission
  if excess > over then
    over, worst = excess, i
  end
end
local allowed = over <= 0
if allowed and ARGV[2] == '1' then
  for i = 1, #KEYS do
    tats[i] = tats[i] + cost * tonumber(ARGV[1 + 2 * i])
    -- lives until its TAT: past it the limit is idle, which an absent key means too
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000))
  end
end
local remaining = nil
for i = 1, #KEYS do
  local emission = tonumber(ARGV[1 + 2 * i])
  local left = math.floor((tonumber(ARGV[2 + 2 * i]) * emission - (tats[i] - now)) / emission)
  if remaining == nil or left < remaining then
    remaining = left
  end
end
if remaining < 0 then
  remaining = 0
end
if allowed then
  return {1, 0, remaining, 0}
end
return {0, math.ceil(over / 1000), remaining, worst}
