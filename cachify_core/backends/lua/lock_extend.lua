-- Renew a lock's lease if the caller still holds it.
--
-- KEYS[1]  lock key        "{<prefix><key>-lock}"
-- ARGV[1]  token of the caller
-- ARGV[2]  new remaining lifetime in ms; "0" = no expiry from now on (a parked task's hold)
-- returns  1 if renewed, 0 if the caller no longer holds the lock
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
