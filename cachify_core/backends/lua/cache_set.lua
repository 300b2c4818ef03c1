-- Store a cache entry unless the namespace was cleared since the caller read it.
--
-- KEYS[1]  namespace meta  "{<prefix><template>-cached}:meta"   hash: gen, fill
-- KEYS[2]  entry           "{<prefix><template>-cached}:<key>"
-- ARGV[1]  generation the caller read (cache_get's second value)
-- ARGV[2]  payload
-- ARGV[3]  lifetime in ms; "0" = never expires
-- returns  1 if stored, 0 if the namespace was cleared meanwhile (a stale result is dropped)
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
end
return 1
