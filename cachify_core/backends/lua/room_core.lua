-- Shared by every room_*.lua script: the loader prepends this file to each of them, and puts
-- room_lib.lua (the bookkeeping helpers) where a script says "--@room_lib", after its fast
-- path: one script per operation, one copy of the bookkeeping, and a fast path that does not
-- pay for building helpers it does not use. Contract: cachify_core/backends/base.py.
--
-- KEYS of every room script, in this order (K = the pool's tag "{<prefix><key>-pool}"):
--   KEYS[1]  K            zset: slot token, or "#<entry id>" (a reservation) -> lease end (ms)
--   KEYS[2]  K:room       zset: parked entry id -> parked-at (ms; strictly increasing = FIFO)
--   KEYS[3]  K:timed      zset: timed entry id -> due (ms)
--   KEYS[4]  K:parked     hash: entry id -> payload (parked, timed and handed-over entries)
--   KEYS[5]  K:handed     zset: handed-over entry id -> lease end (ms): republish after it
--   KEYS[6]  K:until      zset: slot hand-over id -> end of its reservation (ms): back in line then
--   KEYS[7]  K:started    zset: claimed entry id -> remembered until (ms)
--   KEYS[8]  K:conf       string: the room's settings, as the SETTINGS argument below
--   KEYS[9]  K:waiting    flag of blocking pool() waiters (see pool_acquire.lua)
--   KEYS[10] K:wake       their wake list
--   KEYS[11] K:claims     hash: claimed entry id -> the claimer's slot token ("" once it finished,
--                         or once another copy took its place)
--   KEYS[12] K:watch      hash: claimed entry id -> "<kind>:<copy id>", a copy that arrived while
--                         the claimer ran (kind "s": waits for a slot, "t": a timed entry); its
--                         payload is in K:parked
--   KEYS[13] registry     zset "{<registry>}": pool key -> version. Only on a single server:
--                         on Redis Cluster it lives in another slot and the client keeps it.
-- ARGV[1] of every room script: the pool key without its tag (the registry's member).
-- SETTINGS (an argument of most room scripts) is one string, as RoomSettings in base.py:
--   "<max_size>:<slot_ttl_ms>:<handover_lease_ms>:<started_ttl_ms>:<max_waiting>"
-- Times are the server's (TIME), in ms.
local SLOTS, ROOM, TIMED, PARKED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local HANDED, UNTIL, STARTED, CONF = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local WAITING, WAKE, CLAIMS, WATCH, REGISTRY = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
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
