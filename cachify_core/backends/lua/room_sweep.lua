-- Move a room on without a release: room_sweep (the settings come from K:conf).
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  limit: most hand-overs of each kind this call makes (>= 1)
-- returns  {0, held, next_due, id1, payload1, ...}: held: entries the room still holds (0:
--          drained, and left the registry on a single server); next_due: ms until its earliest
--          timed entry is due (-1: none), so the sweeper can wake then; then, to publish: free
--          slots handed to the oldest parked entries, hand-overs whose lease had passed (lease
--          renewed), timed entries now due; copies watching a claim whose claimer died
--          unfinished go first in line
--@room_lib
local limit = tonumber(ARGV[2])
prune()
-- copies watching claims: dropped if the claim finished, first in line if the claimer died
local watched = redis.call('HKEYS', WATCH)
for i = 1, math.min(#watched, limit) do
  resolve_watch(watched[i])
end
local out = {}
local conf = redis.call('GET', CONF)
if conf then
  local max_size, slot_ttl, lease = settings(conf)
  hand_free(max_size, slot_ttl, lease, limit, out)
  local late = redis.call('ZRANGEBYSCORE', HANDED, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(late) do
    local payload = redis.call('HGET', PARKED, id)
    if payload then
      redis.call('ZADD', HANDED, now + lease, id)
      out[#out + 1] = id
      out[#out + 1] = payload
    else
      redis.call('ZREM', HANDED, id)
      redis.call('ZREM', UNTIL, id)
    end
  end
  local due = redis.call('ZRANGEBYSCORE', TIMED, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    for _, id in ipairs(due) do
      hand_over(id, lease, nil, out)  -- republished every lease until claimed or cancelled
    end
    redis.call('ZREM', TIMED, unpack(due))
  end
end
local first = redis.call('ZRANGE', TIMED, 0, 0, 'WITHSCORES')[2]
local next_due = -1
if first then
  next_due = math.max(0, math.ceil(tonumber(first) - now))
end
return reply(0, settle(nil), next_due, out)
