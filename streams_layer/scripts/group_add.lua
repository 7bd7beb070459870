-- KEYS[1] group sorted set; ARGV[1] channel, ARGV[2] group_expiry (s).
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
