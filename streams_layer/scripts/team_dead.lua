-- A team member gives up on an entry it holds: move it to the dead letters.
-- KEYS[1] channel stream, KEYS[2] its dead-letter stream.
-- ARGV[1] team, ARGV[2] consumer, ARGV[3] entry ID, ARGV[4] reason,
-- ARGV[5] dead-letter maxlen, ARGV[6] dead-letter TTL (s), ARGV[7] expiry_ms.
-- Returns 1 when moved, 0 when the consumer no longer holds the entry (a
-- teammate claimed it), -1 when the entry was already trimmed (acknowledged).
local stream, dead, team, consumer, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, team, id, id, 1)
if #pending == 0 or pending[1][2] ~= consumer then return 0 end
local entries = redis.call('XRANGE', stream, id, id)
local moved = -1
if #entries == 0 then
  redis.call('XACK', stream, team, id)
else
  dead_letter(stream, dead, id, entries[1][2], {
    team = team, consumer = consumer, deliveries = tonumber(pending[1][4]),
    reason = ARGV[4], maxlen = ARGV[5], ttl = ARGV[6]})
  moved = 1
end
trim_channel(stream, now_ms() - tonumber(ARGV[7]))
return moved
