-- Record a group message in the group's bounded history stream.
-- KEYS[1] history stream; ARGV[1] payload, ARGV[2] entries kept, ARGV[3] TTL (s).
-- Returns the entry ID.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[2], '*', 'm', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return id
