-- Claim a team's entries that stayed unacknowledged for too long (XAUTOCLAIM).
-- KEYS[1] channel stream, KEYS[2] its dead-letter stream.
-- ARGV[1] team, ARGV[2] consumer, ARGV[3] min idle (ms), ARGV[4] cursor,
-- ARGV[5] count, ARGV[6] max deliveries, ARGV[7] dead-letter maxlen,
-- ARGV[8] dead-letter TTL (s), ARGV[9] expiry_ms.
-- An entry delivered more than max deliveries times goes to the dead letters.
-- Entries deleted from the stream while pending are acknowledged: Redis 7
-- lists them in a third reply element (already gone from the PEL), Redis 6.2
-- returns them with nil fields (still in the PEL).
-- Returns {next cursor, {id, fields, deliveries, ...}, dead-lettered, gone}.
local stream, dead, team = KEYS[1], KEYS[2], ARGV[1]
local max_deliveries = tonumber(ARGV[6])
local reply = redis.call('XAUTOCLAIM', stream, team, ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local claimed, dead_count, gone = {}, 0, 0
for _, entry in ipairs(reply[2]) do
  local id, fields = entry[1], entry[2]
  if not fields then
    redis.call('XACK', stream, team, id)
    gone = gone + 1
  else
    local deliveries = tonumber(redis.call('XPENDING', stream, team, id, id, 1)[1][4])
    if deliveries > max_deliveries then
      dead_letter(stream, dead, id, fields, {
        team = team, consumer = ARGV[2], deliveries = deliveries,
        reason = 'delivered ' .. deliveries .. ' times without acknowledgement',
        maxlen = ARGV[7], ttl = ARGV[8]})
      dead_count = dead_count + 1
    else
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = fields
      claimed[#claimed + 1] = deliveries
    end
  end
end
if reply[3] then
  for _, id in ipairs(reply[3]) do
    redis.call('XACK', stream, team, id)
    gone = gone + 1
  end
end
if dead_count > 0 or gone > 0 then
  trim_channel(stream, now_ms() - tonumber(ARGV[9]))
end
return {reply[1], claimed, dead_count, gone}
