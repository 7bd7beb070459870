-- Append one message for one or more process-specific channels of an inbox.
-- KEYS[1] inbox stream, KEYS[2] counts hash (channel -> queued messages)
-- ARGV[1] payload, ARGV[2] expiry_ms, ARGV[3] key TTL (s),
-- ARGV[4] the channels, comma-separated (channel names hold no commas),
-- ARGV[5] their capacity: one number for all, or one per channel, comma-separated.
-- Channels at capacity are left out. Returns the number of channels the
-- message was queued for.
--
-- One argument for the whole list rather than one per channel: packing a
-- thousand arguments cost redis-py about 0.7 ms per group send.
--
-- Entries older than expiry are removed (an entry the reader has not read
-- gives its channels' counts back) only when it can matter: a channel looks
-- full, or the inbox holds more than a reader that keeps up leaves behind.
-- Probing on every send cost about a quarter of the script's time.
local stream, counts = KEYS[1], KEYS[2]

local channels = split(ARGV[4])
local capacities = split(ARGV[5])
for i = 1, #capacities do capacities[i] = tonumber(capacities[i]) end

-- The channels with room, and their counts after this message (HSET pairs).
local function accepted_channels()
  local queued = hmget_numbers(counts, channels)
  local accepted, raised = {}, {}
  for i, ch in ipairs(channels) do
    if queued[i] < (capacities[i] or capacities[1]) then
      accepted[#accepted + 1] = ch
      raised[#raised + 1] = ch
      raised[#raised + 1] = queued[i] + 1
    end
  end
  return accepted, raised
end

local function expire_old_entries()
  local limit_ms = now_ms() - tonumber(ARGV[2])
  local old = redis.call('XRANGE', stream, '-', '(' .. limit_ms .. '-0', 'COUNT', EXPIRE_BATCH)
  if #old == 0 then return end
  local read_upto = {0, 0}
  for _, g in ipairs(groups_of(stream)) do
    read_upto = parse_id(g.last)
  end
  for _, entry in ipairs(old) do
    if id_after(parse_id(entry[1]), read_upto) then
      for ch in string.gmatch(field(entry[2], 'c') or '', '[^,]+') do
        if redis.call('HINCRBY', counts, ch, -1) <= 0 then redis.call('HDEL', counts, ch) end
      end
    end
    redis.call('XDEL', stream, entry[1])
  end
end

local accepted, raised = accepted_channels()
if #accepted < #channels or redis.call('XLEN', stream) > INBOX_BACKLOG then
  expire_old_entries()
  accepted, raised = accepted_channels()
end
if #accepted == 0 then return 0 end

local listed = ARGV[4]
if #accepted < #channels then listed = table.concat(accepted, ',') end
redis.call('XADD', stream, '*', 'c', listed, 'm', ARGV[1])
-- One HSET per slice rather than one HINCRBY per channel (the script is atomic).
call_sliced('HSET', counts, raised, 2 * SLICE)
redis.call('EXPIRE', stream, ARGV[3])
redis.call('EXPIRE', counts, ARGV[3])
return #accepted
