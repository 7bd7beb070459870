-- Append one message to a normal channel stream.
-- KEYS[1] stream; ARGV[1] payload, ARGV[2] expiry_ms, ARGV[3] key TTL (s),
-- ARGV[4] capacity. Returns 1 when queued, 0 when the channel is full.
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 1 then
  local groups = groups_of(stream)
  trim_channel(stream, now_ms() - tonumber(ARGV[2]), groups)
  if queued_in_channel(stream, groups) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('XADD', stream, '*', 'm', ARGV[1])
redis.call('EXPIRE', stream, ARGV[3])
return 1
