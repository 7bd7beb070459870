-- Live members of a group; memberships older than group_expiry are removed.
-- KEYS[1] group sorted set; ARGV[1] group_expiry (s).
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(t[1]) - tonumber(ARGV[1])))
return redis.call('ZRANGE', KEYS[1], 0, -1)
