-- Shared by every room_*.lua script: the loader prepends this file to each of them (one
-- script per operation, one copy of the bookkeeping). Contract: cachify_core/backends/base.py.
--
-- KEYS of every room script, in this order (K = the pool's tag "{<prefix><key>-pool}"):
--   KEYS[1]  K            zset: slot token, or "#<entry id>" (a reservation) -> lease end (ms)
--   KEYS[2]  K:room       zset: parked entry id -> parked-at (ms; strictly increasing = FIFO)
--   KEYS[3]  K:timed      zset: timed entry id -> due (ms)
--   KEYS[4]  K:parked     hash: entry id -> payload (parked, timed and handed-over entries)
--   KEYS[5]  K:handed     zset: handed-over entry id -> lease end (ms): republish after it
--   KEYS[6]  K:until      zset: handed-over entry id -> given up at (ms)
--   KEYS[7]  K:started    zset: claimed entry id -> remembered until (ms)
--   KEYS[8]  K:conf       string: the room's settings, as the SETTINGS argument below
--   KEYS[9]  K:waiting    flag of blocking pool() waiters (see pool_acquire.lua)
--   KEYS[10] K:wake       their wake list
--   KEYS[11] registry     zset "{<registry>}": pool key -> version. Only on a single server:
--                         on Redis Cluster it lives in another slot and the client keeps it.
-- ARGV[1] of every room script: the pool key without its tag (the registry's member).
-- SETTINGS (an argument of most room scripts) is one string, as RoomSettings in base.py:
--   "<max_size>:<slot_ttl_ms>:<handover_lease_ms>:<started_ttl_ms>:<max_waiting>"
-- Times are the server's (TIME), in ms.
local SLOTS, ROOM, TIMED, PARKED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local HANDED, UNTIL, STARTED, CONF = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local WAITING, WAKE, REGISTRY = KEYS[9], KEYS[10], KEYS[11]
local NAME = ARGV[1]
local NO_EXPIRY = 4503599627370496  -- 2^52 ms, as pool_acquire.lua
local PRUNE_BATCH = 64
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The numbers of a SETTINGS string: max_size, slot_ttl_ms, handover_lease_ms, started_ttl_ms,
-- max_waiting.
local function settings(text)
  local size, ttl, lease, started, waiting = string.match(text, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
  return tonumber(size), tonumber(ttl), tonumber(lease), tonumber(started), tonumber(waiting)
end

-- Expired slots and reservations, old started marks, hand-overs past their life (their
-- reservation ended at the same moment; the payload goes with them).
local function prune()
  redis.call('ZREMRANGEBYSCORE', SLOTS, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', STARTED, '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', UNTIL, '-inf', now, 'LIMIT', 0, PRUNE_BATCH)
  if #gone > 0 then
    redis.call('ZREM', UNTIL, unpack(gone))
    redis.call('ZREM', HANDED, unpack(gone))
    redis.call('HDEL', PARKED, unpack(gone))
  end
end

-- The slot set lives as long as its longest lease, so an abandoned pool leaves nothing.
local function keep_slots()
  local last = redis.call('ZRANGE', SLOTS, -1, -1, 'WITHSCORES')[2]
  if last then
    if tonumber(last) >= NO_EXPIRY then
      redis.call('PERSIST', SLOTS)
    else
      redis.call('PEXPIREAT', SLOTS, tonumber(last))
    end
  end
end

-- Mark `id` handed over (lease and life) and append (id, payload) to `out`; false if it has
-- no payload (cannot happen while the room is kept; then nothing is handed).
local function hand_over(id, lease_ms, until_ms, out)
  local payload = redis.call('HGET', PARKED, id)
  if not payload then
    return false
  end
  redis.call('ZADD', HANDED, now + lease_ms, id)
  redis.call('ZADD', UNTIL, until_ms, id)
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

-- After a change: store the settings, set lifetimes (nothing expires while an entry waits),
-- keep the registry exact (single server). Returns the entries the room still holds.
local function settle(conf)
  local waiting = redis.call('ZCARD', ROOM) + redis.call('ZCARD', TIMED)
  local held = waiting + redis.call('ZCARD', HANDED)
  local last = redis.call('ZRANGE', UNTIL, -1, -1, 'WITHSCORES')[2]
  if held > 0 and conf then
    redis.call('SET', CONF, conf)
  end
  if waiting > 0 then
    redis.call('PERSIST', PARKED)
    redis.call('PERSIST', CONF)
  elseif last then
    redis.call('PEXPIREAT', PARKED, tonumber(last))
    redis.call('PEXPIREAT', CONF, tonumber(last))
  else
    redis.call('DEL', PARKED, CONF)
  end
  if last then
    redis.call('PEXPIREAT', HANDED, tonumber(last))
    redis.call('PEXPIREAT', UNTIL, tonumber(last))
  end
  local mark = redis.call('ZRANGE', STARTED, -1, -1, 'WITHSCORES')[2]
  if mark then
    redis.call('PEXPIREAT', STARTED, tonumber(mark))
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

-- The reply of every mutating room script: {status, held, parked_new, id, payload, ...}.
local function reply(status, held, parked_new, out)
  local r = {status, held, parked_new}
  for i = 1, #out do
    r[#r + 1] = out[i]
  end
  return r
end
