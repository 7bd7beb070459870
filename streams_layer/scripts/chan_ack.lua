-- Acknowledge entries of a team and trim what every team has.
-- KEYS[1] stream; ARGV[1] team (consumer group), ARGV[2] expiry_ms, ARGV[3..] entry IDs.
local stream = KEYS[1]
if #ARGV > 2 then
  redis.call('XACK', stream, ARGV[1], unpack(ARGV, 3))
end
if redis.call('EXISTS', stream) == 1 then
  trim_channel(stream, now_ms() - tonumber(ARGV[2]))
end
return 1
