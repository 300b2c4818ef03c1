-- Take a slot, claim a reservation, or park: room_acquire (base.py has the full contract).
--
-- KEYS     as room_core.lua
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  token of the would-be holder
-- ARGV[3]  entry id to park under (a redelivery of the same delivery parks under the same id:
--          it is then a duplicate, see below)
-- ARGV[4]  payload to park
-- ARGV[5]  SETTINGS (room_core.lua); max_size >= 1; slot_ttl_ms is the lease of the slot
--          taken and of reservations made; max_waiting bounds the parked entries
-- ARGV[6]  reservation id the delivery carries, or "" for none
-- ARGV[7]  most hand-overs this call makes
-- returns  {status, held, parked_new, id1, payload1, ...}: status 1 acquired, 2 claimed,
--          3 duplicate, 4 parked, 5 full (nothing parked); held: entries the room holds
--          after the call; parked_new: 1 if this call stored the entry (parked, or kept as the
--          copy watching a running claim); then the hand-overs this call made, to publish
--
-- A reservation already claimed: while its claimer's slot lives the delivery is a duplicate
-- (the first such copy is kept: it runs if the claimer dies unfinished); once the claimer
-- finished (room_release with its id) or a copy took its place, a duplicate; if the claimer
-- died unfinished (slot ran out, nobody watching) this delivery takes the claim over and goes
-- the normal way (acquired: it is the claimer now; parked: its own entry carries on). A
-- reservation that ran out unclaimed put its entry back first in line: its delivery claims a
-- free slot as that entry, or is acknowledged (parked) while the entry keeps its place.
--
-- A token that already holds a live slot keeps it, its lease renewed (as pool_acquire.lua): the
-- same delivery asking again after a lost reply, or a copy asking under its deferred
-- delivery's token; likewise the token recorded as a reservation's claimer claims it again.
local token, entry, payload = ARGV[2], ARGV[3], ARGV[4]
local max_size, slot_ttl, lease, started_ttl, max_waiting = settings(ARGV[5])
local rid, batch = ARGV[6], tonumber(ARGV[7])
-- A room that holds nothing and remembers nothing (no parked, timed or handed-over entry, no
-- claim, no started mark): the quietest case, a pool that is not full. One call tells it, and
-- then neither the redelivery checks below nor the held count can find anything.
local quiet = rid == '' and redis.call('EXISTS', ROOM, TIMED, HANDED, CLAIMS, STARTED) == 0
-- An entry id already handed over, claimed, or remembered as started: this is a redelivery of
-- the delivery that parked under it (a worker died between the park and its acknowledgement),
-- and its task is on its way or ran: a duplicate, nothing stored. (Still parked: it keeps its
-- place, as a retried call does, below.)
if rid == '' and not quiet and (redis.call('ZSCORE', HANDED, entry)
    or redis.call('HEXISTS', CLAIMS, entry) == 1 or redis.call('ZSCORE', STARTED, entry)) then
  return {3, 1, 0}
end
if quiet or (rid == '' and redis.call('EXISTS', ROOM) == 0) then
  -- the common case: nobody is parked, so no hand-over is owed and a free slot is ours (as
  -- pool_acquire.lua); the room's other bookkeeping is not touched
  redis.call('ZREMRANGEBYSCORE', SLOTS, '-inf', now)
  if redis.call('ZCARD', SLOTS) < max_size or redis.call('ZSCORE', SLOTS, token) then
    redis.call('ZADD', SLOTS, now + slot_ttl, token)
    keep_slots()
    if quiet then
      return {1, 0, 0}
    end
    return {1, redis.call('ZCARD', TIMED) + redis.call('ZCARD', HANDED), 0}
  end
end
--@room_lib
local conf = ARGV[5]
prune()
local status, takeover, parked_new = nil, false, 0
if rid ~= '' then
  local claimer = redis.call('HGET', CLAIMS, rid)
  if claimer == token and redis.call('ZSCORE', SLOTS, token) then
    redis.call('ZADD', SLOTS, now + slot_ttl, token)  -- its own claim, its reply lost
    keep_slots()
    status = 2
  elseif claimer then
    local verdict, stored = claimed_again(rid, 's', entry, payload)
    if verdict == 'duplicate' then
      status, parked_new = 3, stored
    else
      takeover = true
    end
  elseif redis.call('ZSCORE', ROOM, rid) then
    -- its hand-over ran out unclaimed and it waits first in line again: this is its delivery
    if redis.call('ZRANGE', ROOM, 0, 0)[1] == rid and redis.call('ZCARD', SLOTS) < max_size then
      redis.call('ZREM', ROOM, rid)
      redis.call('HDEL', PARKED, rid)
      redis.call('ZADD', SLOTS, now + slot_ttl, token)
      claim(rid, token, started_ttl)
      keep_slots()
      status = 2
    else
      status = 4  -- it keeps its place; this delivery is acknowledged
    end
  elseif redis.call('ZSCORE', SLOTS, '#' .. rid) then
    -- the reserved slot becomes the token's running lease; the hand-over is confirmed
    redis.call('ZREM', SLOTS, '#' .. rid)
    redis.call('ZADD', SLOTS, now + slot_ttl, token)
    redis.call('ZREM', HANDED, rid)
    redis.call('ZREM', UNTIL, rid)
    redis.call('HDEL', PARKED, rid)
    claim(rid, token, started_ttl)
    keep_slots()
    status = 2
  end
end
local already = redis.call('ZSCORE', ROOM, entry)
local out = {}
-- free slots go to the oldest waiters first: a newcomer never jumps the queue
local free = hand_free(max_size, slot_ttl, lease, batch, out)
if status then
  -- decided above
elseif already then
  status = 4
elseif rid == '' and redis.call('ZSCORE', SLOTS, token) then
  redis.call('ZADD', SLOTS, now + slot_ttl, token)  -- its own slot: lease renewed
  keep_slots()
  status = 1
elseif free > 0 and redis.call('ZCARD', ROOM) == 0 then
  redis.call('ZADD', SLOTS, now + slot_ttl, token)
  keep_slots()
  status = 1
elseif redis.call('ZCARD', ROOM) >= max_waiting then
  status = 5
else
  -- strictly after the tail, so parks within one ms keep their order
  local at = now
  local tail = redis.call('ZRANGE', ROOM, -1, -1, 'WITHSCORES')[2]
  if tail and tonumber(tail) >= at then
    at = tonumber(tail) + 1 / 1024
  end
  redis.call('ZADD', ROOM, at, entry)
  redis.call('HSET', PARKED, entry, payload)
  status = 4
  parked_new = 1
end
if takeover and status == 1 then
  claim(rid, token, started_ttl)
elseif takeover and status == 4 then
  claim(rid, '', started_ttl)  -- its parked entry carries on; later copies are duplicates
end
return reply(status, settle(conf), parked_new, out)
