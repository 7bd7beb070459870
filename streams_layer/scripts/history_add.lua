-- Record a group message in the group's bounded history stream.
-- KEYS[1] history stream, KEYS[2] string: ID of the newest entry trimmed away
-- ARGV[1] payload, ARGV[2] entries kept, ARGV[3] TTL (s). Returns the entry ID.
-- The trimmed ID is kept by hand because Redis 7.0 leaves XINFO's
-- max-deleted-entry-id at 0-0 when MAXLEN trims.
local history, trimmed = KEYS[1], KEYS[2]
local id = redis.call('XADD', history, '*', 'm', ARGV[1])
local excess = redis.call('XLEN', history) - tonumber(ARGV[2])
if excess > 0 then
  local old = redis.call('XRANGE', history, '-', '+', 'COUNT', excess)
  redis.call('SET', trimmed, old[#old][1])
  redis.call('XTRIM', history, 'MAXLEN', '=', ARGV[2])
end
redis.call('EXPIRE', history, ARGV[3])
if redis.call('EXISTS', trimmed) == 1 then redis.call('EXPIRE', trimmed, ARGV[3]) end
return id
