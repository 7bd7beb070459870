-- KEYS[1] group sorted set, KEYS[2] its version; ARGV[1] channel, ARGV[2]
-- group_expiry (s). Removes the member; the version changes if it was one.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then bump_version(KEYS[2], ARGV[2]) end
return 1
