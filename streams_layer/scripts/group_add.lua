-- KEYS[1] group sorted set, KEYS[2] its version; ARGV[1] channel, ARGV[2]
-- group_expiry (s).
-- The score is the server's time in seconds; members older than group_expiry
-- have lapsed (group_send reads only newer ones) and are removed here.
-- The version changes with every call: a refreshed score is a change too.
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
bump_version(KEYS[2], ARGV[2])
return 1
