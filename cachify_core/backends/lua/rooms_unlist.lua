-- Redis Cluster only: take a drained room off the registry unless a park listed it again.
--
-- KEYS[1]  registry        "{<registry>}"   zset: pool key -> version (a park adds 1)
-- ARGV[1]  pool key (untagged)
-- ARGV[2]  version the caller read before it found the room empty
-- returns  1 if removed, 0 if the version moved on (a park came in between) or it was gone
local version = redis.call('ZSCORE', KEYS[1], ARGV[1])
if version and tonumber(version) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
