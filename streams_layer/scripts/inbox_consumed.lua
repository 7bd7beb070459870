-- Adjust the queued counts of an inbox's channels: positive counts give back
-- capacity of messages taken out of local buffers, negative ones hold capacity
-- for messages delivered in-process without Redis.
-- KEYS[1] counts hash; ARGV[1] key TTL (s), ARGV[2] channels, comma-separated,
-- ARGV[3] their counts, comma-separated in the same order.
-- A count that reaches zero is deleted. Slices of one HMGET, one HSET and one
-- HDEL each, not a command per channel: a group of a thousand members gives
-- back a thousand counts at once.
local counts = KEYS[1]
local SLICE = 1000
local channels, amounts = split(ARGV[2]), split(ARGV[3])
for first = 1, #channels, SLICE do
  local last = math.min(first + SLICE - 1, #channels)
  local got = redis.call('HMGET', counts, unpack(channels, first, last))
  local kept, gone = {}, {}
  for i = first, last do
    local left = tonumber(got[i - first + 1] or '0') - tonumber(amounts[i])
    if left > 0 then
      kept[#kept + 1] = channels[i]
      kept[#kept + 1] = left
    else
      gone[#gone + 1] = channels[i]
    end
  end
  if #kept > 0 then redis.call('HSET', counts, unpack(kept)) end
  if #gone > 0 then redis.call('HDEL', counts, unpack(gone)) end
end
if redis.call('EXISTS', counts) == 1 then redis.call('EXPIRE', counts, ARGV[1]) end
return 1
