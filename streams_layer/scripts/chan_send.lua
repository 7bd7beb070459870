-- Append one message to a normal channel stream.
-- KEYS[1] stream; ARGV[1] payload, ARGV[2] expiry_ms, ARGV[3] key TTL (s),
-- ARGV[4] capacity. Returns 1 when queued, 0 when the channel is full.
--
-- What a team has not received never exceeds the stream's length, so while
-- the stream is shorter than both the capacity and INBOX_BACKLOG the channel
-- cannot be full and trimming can wait: XINFO GROUPS, XPENDING and XTRIM run
-- only past that length (with them skipped, the send and acknowledge scripts
-- of a send/receive loop averaged 10.2 instead of 16.0 us per call).
-- Acknowledged entries are trimmed by the acknowledging script; an expired
-- entry left here meanwhile is never delivered (receive() checks its age).
local stream = KEYS[1]
local capacity = tonumber(ARGV[4])
local length = redis.call('XLEN', stream)
if length >= capacity or length >= INBOX_BACKLOG then
  local groups = groups_of(stream)
  trim_channel(stream, now_ms() - tonumber(ARGV[2]), groups)
  if queued_in_channel(stream, groups, capacity) >= capacity then return 0 end
end
redis.call('XADD', stream, '*', 'm', ARGV[1])
keep_alive(stream, ARGV[3])
return 1
