-- Adjust the queued counts of an inbox's channels: positive counts give back
-- capacity of messages taken out of local buffers, negative ones hold capacity
-- for messages delivered in-process without Redis.
-- KEYS[1] counts hash; ARGV[1] key TTL (s), ARGV[2] channels, comma-separated,
-- ARGV[3] their counts, comma-separated in the same order.
-- A count that reaches zero is deleted. One HMGET, one HSET and one HDEL per
-- slice of channels, not a command per channel: a group of a thousand
-- members gives back a thousand counts at once.
local counts = KEYS[1]
local channels, amounts = split(ARGV[2]), split(ARGV[3])
local queued = hmget_numbers(counts, channels)
local kept, gone = {}, {}
for i, ch in ipairs(channels) do
  local left = queued[i] - tonumber(amounts[i])
  if left > 0 then
    kept[#kept + 1] = ch
    kept[#kept + 1] = left
  else
    gone[#gone + 1] = ch
  end
end
call_sliced('HSET', counts, kept, 2 * SLICE)
call_sliced('HDEL', counts, gone, SLICE)
if redis.call('EXISTS', counts) == 1 then redis.call('EXPIRE', counts, ARGV[1]) end
return 1
