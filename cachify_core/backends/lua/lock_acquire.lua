-- Take a lock if it is free; when it is not and the caller will wait, say so.
--
-- KEYS[1]  lock key        "{<prefix><key>-lock}"         string: the holder's token
-- KEYS[2]  waiting flag    "{<prefix><key>-lock}:waiting"  present while someone waits
-- ARGV[1]  token of the would-be holder
-- ARGV[2]  lock lifetime in ms; "0" = never expires
-- ARGV[3]  waiting-flag lifetime in ms; "0" = the caller will not wait
-- returns  1 if the lock is now held by ARGV[1], 0 if someone else holds it
local ok
if ARGV[2] == '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if ok then
  return 1
end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
end
return 0
