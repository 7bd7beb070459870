-- A team member's housekeeping, in one step: acknowledge, keep its buffered
-- entries fresh, claim the team's entries that stayed unacknowledged for too
-- long (XAUTOCLAIM).
-- KEYS[1] channel stream, KEYS[2] its dead-letter stream.
-- ARGV[1] team, ARGV[2] consumer, ARGV[3] min idle (ms), ARGV[4] cursor,
-- ARGV[5] count (0: claim nothing), ARGV[6] max deliveries,
-- ARGV[7] dead-letter maxlen, ARGV[8] dead-letter TTL (s), ARGV[9] expiry_ms,
-- ARGV[10] n, ARGV[11 .. 10 + n] IDs to acknowledge first (so that an entry
-- handled just now is not claimed), ARGV[11 + n ..] IDs the consumer read but
-- has not handed out yet (its buffer).
-- Each buffered ID the consumer still holds gets its idle time reset, and
-- JUSTID leaves its delivery count alone: an entry waiting in a live
-- member's buffer is neither claimed by a teammate nor counted as one more
-- delivery. An ID a teammate claimed meanwhile is left to it (a claim with
-- min idle 0 would take it back). XAUTOCLAIM from the ID with COUNT 1 claims
-- exactly that ID once XPENDING found it pending; XCLAIM would do the same
-- but need one more command in the minimal ACL (docs/deployment.md).
-- An entry claimed with more than max deliveries goes to the dead letters.
-- Entries deleted from the stream while pending are acknowledged: Redis 7
-- lists them in a third reply element (already gone from the PEL), Redis 6.2
-- returns them with nil fields (still in the PEL).
-- Returns {next cursor, {id, fields, deliveries, ...}, dead-lettered, gone,
-- {buffered IDs still held}}.
local stream, dead, team, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[6])
local acks = tonumber(ARGV[10])
local first_held = 11 + acks

if acks > 0 then  -- at most ACK_CHUNK of them, as in chan_ack.lua
  redis.call('XACK', stream, team, unpack(ARGV, 11, first_held - 1))
end

local kept = {}
for i = first_held, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, team, id, id, 1)
  if #pending > 0 and pending[1][2] == consumer then
    -- Redis 7 lists an entry deleted from the stream apart (and drops it from the PEL).
    local refreshed = redis.call('XAUTOCLAIM', stream, team, consumer, 0, id, 'COUNT', 1, 'JUSTID')
    if refreshed[2][1] == id then kept[#kept + 1] = id end
  end
end

if tonumber(ARGV[5]) == 0 then
  return {ARGV[4], {}, 0, 0, kept}
end

local reply = redis.call('XAUTOCLAIM', stream, team, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
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
        team = team, consumer = consumer, deliveries = deliveries,
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
return {reply[1], claimed, dead_count, gone, kept}
