-- Release a lock only if the caller holds it (compare-and-delete); wake one waiter.
--
-- KEYS[1]  lock key        "{<prefix><key>-lock}"          string: the holder's token
-- KEYS[2]  waiting flag    "{<prefix><key>-lock}:waiting"   present while someone waits
-- KEYS[3]  wake list       "{<prefix><key>-lock}:wake"      BLPOP'ed by waiters
-- ARGV[1]  token of the caller
-- ARGV[2]  "1" to release whoever holds it (operator's force release), else "0"
-- returns  1 if a live lock was released, 0 if the caller did not hold it (nothing is deleted)
local holder = redis.call('GET', KEYS[1])
if not holder or (ARGV[2] ~= '1' and holder ~= ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
local waiting_ms = redis.call('PTTL', KEYS[2])
if waiting_ms > 0 then
  -- one pending signal is enough: only one waiter can take a lock
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 0)
  redis.call('PEXPIRE', KEYS[3], waiting_ms)
end
return 1
