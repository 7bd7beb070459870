-- Give back capacity for messages taken out of local buffers.
-- KEYS[1] counts hash; ARGV channel, count pairs.
local counts = KEYS[1]
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', counts, ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', counts, ARGV[i])
  end
end
return 1
