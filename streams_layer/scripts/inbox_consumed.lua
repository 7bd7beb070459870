-- Adjust the queued counts of an inbox's channels: positive counts give back
-- capacity of messages taken out of local buffers, negative ones hold capacity
-- for messages delivered in-process without Redis.
-- KEYS[1] counts hash; ARGV[1] key TTL (s), ARGV[2..] channel, count pairs.
local counts = KEYS[1]
for i = 2, #ARGV, 2 do
  if redis.call('HINCRBY', counts, ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', counts, ARGV[i])
  end
end
if redis.call('EXISTS', counts) == 1 then redis.call('EXPIRE', counts, ARGV[1]) end
return 1
