-- The bookkeeping helpers of the room scripts, put where a room_*.lua script says
-- "--@room_lib" (after room_core.lua, whose names they use). Contract: backends/base.py.

-- The claimer of `rid` while it still runs: its slot's lease end, else false.
local function claimer_live(rid)
  local claimer = redis.call('HGET', CLAIMS, rid)
  if claimer and claimer ~= '' then
    local ends = redis.call('ZSCORE', SLOTS, claimer)
    if ends and tonumber(ends) > now then
      return tonumber(ends)
    end
  end
  return false
end

-- Put `id` (its payload already in PARKED) first in line: it was started before anyone waiting.
local function park_first(id)
  local at = now
  local head = redis.call('ZRANGE', ROOM, 0, 0, 'WITHSCORES')[2]
  if head and tonumber(head) <= at then
    at = tonumber(head) - 1 / 1024
  end
  redis.call('ZADD', ROOM, at, id)
end

-- The copy watching claim `rid`: kept while the claimer runs; dropped once it finished; put
-- first in line (or due now, for a timed entry) once the claimer died unfinished.
local function resolve_watch(rid)
  local watching = redis.call('HGET', WATCH, rid)
  if not watching or claimer_live(rid) then
    return
  end
  redis.call('HDEL', WATCH, rid)
  local kind, copy = string.sub(watching, 1, 1), string.sub(watching, 3)
  local claimer = redis.call('HGET', CLAIMS, rid)
  if claimer and claimer ~= '' then
    redis.call('HSET', CLAIMS, rid, '')  -- the copy runs instead; later copies are duplicates
    if kind == 't' then
      redis.call('ZADD', TIMED, now, copy)
    else
      park_first(copy)
    end
  else
    redis.call('HDEL', PARKED, copy)
  end
end

-- SETTINGS `text` with the room's stored max_size kept, if it has one: timed entries and claims
-- never take a pool's slots, so their callers (who may say 0) must not change its size.
local function keep_size(text)
  local size = string.match(redis.call('GET', CONF) or '', '^(%d+):')
  if size then
    return size .. string.match(text, '^%d+(:.*)$')
  end
  return text
end

-- Expired slots and reservations; started marks past their time (kept while the claimer runs,
-- else forgotten, after settling the copy watching them); slot hand-overs whose reservation
-- ran out unclaimed go back first in line under the same id (handed over again when a slot
-- frees; a delivery of it that still comes is matched to it), so a lost publish loses nothing.
local function prune()
  redis.call('ZREMRANGEBYSCORE', SLOTS, '-inf', now)
  local old = redis.call('ZRANGEBYSCORE', STARTED, '-inf', now, 'LIMIT', 0, PRUNE_BATCH)
  for _, rid in ipairs(old) do
    local ends = claimer_live(rid)
    if ends then
      redis.call('ZADD', STARTED, ends, rid)
    else
      resolve_watch(rid)
      redis.call('ZREM', STARTED, rid)
      redis.call('HDEL', CLAIMS, rid)
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', UNTIL, '-inf', now, 'LIMIT', 0, PRUNE_BATCH)
  if #gone > 0 then
    redis.call('ZREM', UNTIL, unpack(gone))
    redis.call('ZREM', HANDED, unpack(gone))
    for i = #gone, 1, -1 do  -- the longest given up ends first
      if redis.call('HEXISTS', PARKED, gone[i]) == 1 then
        park_first(gone[i])
      end
    end
  end
end

-- Mark `id` handed over (its lease; with `until_ms`, the end of its reservation) and append
-- (id, payload) to `out`; false if it has no payload (cannot happen while the room is kept).
local function hand_over(id, lease_ms, until_ms, out)
  local payload = redis.call('HGET', PARKED, id)
  if not payload then
    return false
  end
  redis.call('ZADD', HANDED, now + lease_ms, id)
  if until_ms then
    redis.call('ZADD', UNTIL, until_ms, id)
  end
  out[#out + 1] = id
  out[#out + 1] = payload
  return true
end

-- Reserve free slots for the oldest parked entries (at most `batch`); the slots still free.
local function hand_free(max_size, slot_ttl_ms, lease_ms, batch, out)
  local free = max_size - redis.call('ZCARD', SLOTS)
  if free <= 0 then
    return 0
  end
  local ids = redis.call('ZRANGE', ROOM, 0, math.min(free, batch) - 1)
  if #ids == 0 then
    return free
  end
  local ends = now + slot_ttl_ms
  for _, id in ipairs(ids) do
    if hand_over(id, lease_ms, ends, out) then
      redis.call('ZADD', SLOTS, ends, '#' .. id)
      free = free - 1
    end
  end
  redis.call('ZREM', ROOM, unpack(ids))
  keep_slots()
  return free
end

-- After a change: store the settings, set lifetimes (nothing a room holds expires while it
-- holds it), keep the registry exact (single server). Returns the entries the room holds
-- (parked, timed, handed over, watching).
local function settle(conf)
  local held = redis.call('ZCARD', ROOM) + redis.call('ZCARD', TIMED) + redis.call('HLEN', WATCH)
    + redis.call('ZCARD', HANDED)
  if held > 0 then
    if conf then
      redis.call('SET', CONF, conf)
    end
    redis.call('PERSIST', PARKED)
    redis.call('PERSIST', CONF)
    redis.call('PERSIST', CLAIMS)
  else
    redis.call('DEL', PARKED, CONF, UNTIL)
  end
  local mark = redis.call('ZRANGE', STARTED, -1, -1, 'WITHSCORES')[2]
  if mark then
    -- a running claimer's mark is moved on by the next prune; until then its lease bounds it
    local last_slot = redis.call('ZREVRANGEBYSCORE', SLOTS, '(' .. NO_EXPIRY, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
    local ends = math.max(tonumber(mark), tonumber(last_slot or 0))
    redis.call('PEXPIREAT', STARTED, ends)
    if held == 0 then
      redis.call('PEXPIREAT', CLAIMS, ends)
    end
  end
  if REGISTRY then
    if held > 0 then
      redis.call('ZADD', REGISTRY, 'NX', 1, NAME)
    else
      redis.call('ZREM', REGISTRY, NAME)
    end
  end
  return held
end

-- A delivery of claimed entry `rid` arrived again, as copy (`kind`, `copy`, `payload`):
-- 'duplicate' (the claimer runs: the first such copy is kept to watch it; or the claim finished,
-- or a copy already took its place), or 'takeover' (the claimer died unfinished: this copy runs
-- instead). Returns the verdict and whether a copy was stored.
local function claimed_again(rid, kind, copy, payload)
  if claimer_live(rid) then
    if redis.call('HEXISTS', WATCH, rid) == 0 then
      redis.call('HSET', WATCH, rid, kind .. ':' .. copy)
      redis.call('HSET', PARKED, copy, payload)
      return 'duplicate', 1
    end
    return 'duplicate', 0
  end
  local claimer = redis.call('HGET', CLAIMS, rid)
  if claimer and claimer ~= '' and redis.call('HEXISTS', WATCH, rid) == 0 then
    return 'takeover', 0
  end
  resolve_watch(rid)
  return 'duplicate', 0
end

-- Record `token` as the claimer of `rid` (remembered at least `started_ttl` ms).
local function claim(rid, token, started_ttl)
  redis.call('HSET', CLAIMS, rid, token)
  redis.call('ZADD', STARTED, now + started_ttl, rid)
end

-- The reply of every mutating room script: {status, held, parked_new, id, payload, ...}.
local function reply(status, held, parked_new, out)
  local r = {status, held, parked_new}
  for i = 1, #out do
    r[#r + 1] = out[i]
  end
  return r
end
