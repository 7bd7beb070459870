-- Adjust the queued counts of an inbox's channels: positive counts give back
-- capacity of messages taken out of local buffers, negative ones hold capacity
-- for messages delivered in-process without Redis.
-- KEYS[1] counts hash; ARGV[1] key TTL (s), ARGV[2] the channels and ARGV[3]
-- their counts, both comma-separated in the same order.
-- A count that reaches zero is deleted. One HMGET, one HSET and one HDEL per
-- slice of channels, not a command per channel: a group of a thousand
-- members gives back a thousand counts at once.
local counts = KEYS[1]
local channels, amounts = split(ARGV[2]), split(ARGV[3])
local queued = hmget_numbers(counts, channels)
local kept, gone = {}, {}
local k, g = 0, 0
for i = 1, #channels do
  local left = queued[i] - tonumber(amounts[i])
  if left > 0 then
    kept[k + 1] = channels[i]
    kept[k + 2] = tostring(left)
    k = k + 2
  else
    g = g + 1
    gone[g] = channels[i]
  end
end
call_sliced('HSET', counts, kept, 2 * SLICE)
call_sliced('HDEL', counts, gone, SLICE)
keep_alive(counts, ARGV[1])
return 1
