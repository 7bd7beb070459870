-- Send a dead letter to its channel again (a new entry, fresh expiry) and
-- remove it from the dead letters. Capacity is not checked: replay is an
-- operator's decision.
-- KEYS[1] dead-letter stream, KEYS[2] channel stream.
-- ARGV[1] dead-letter ID, ARGV[2] channel key TTL (s).
-- Returns the new entry's ID, or false when there is no such dead letter.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entries == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'm', field(entries[1][2], 'm'))
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return id
