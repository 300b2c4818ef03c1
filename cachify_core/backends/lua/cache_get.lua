-- Read a cache entry of the current generation, with the namespace's generation and fill epoch.
--
-- KEYS[1]  namespace meta  "{<prefix><template>-cached}:meta"   hash: gen, fill (absent = 0)
-- KEYS[2]  entry           "{<prefix><template>-cached}:<key>"  string: "<gen>:<payload>"
-- returns  {payload or false, gen, fill}; an entry of an older generation (cleared) is a miss
local meta = redis.call('HMGET', KEYS[1], 'gen', 'fill')
local gen = meta[1] or '0'
local fill = meta[2] or '0'
local entry = redis.call('GET', KEYS[2])
if entry then
  local sep = string.find(entry, ':', 1, true)
  if sep and string.sub(entry, 1, sep - 1) == gen then
    return {string.sub(entry, sep + 1), gen, fill}
  end
end
return {false, gen, fill}
