-- Store a cache entry unless the namespace was cleared since the caller read it.
--
-- KEYS[1]  generation      "{<prefix><template>-cached}:gen"    integer, absent = 0
-- KEYS[2]  entry           "{<prefix><template>-cached}:<key>"  string: "<gen>:<payload>"
-- ARGV[1]  generation the caller read with the lookup
-- ARGV[2]  payload
-- ARGV[3]  lifetime in ms; "0" = never expires
-- returns  1 if stored, 0 if the namespace was cleared meanwhile (a stale result is dropped)
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
end
return 1
