-- Append one message for one or more process-specific channels of an inbox.
-- KEYS[1] inbox stream, KEYS[2] counts hash (channel -> queued messages)
-- ARGV[1] payload, ARGV[2] expiry_ms, ARGV[3] key TTL (s),
-- ARGV[4..] channel, capacity pairs.
-- Channels at capacity are left out. Returns the number of channels the
-- message was queued for.
--
-- Entries older than expiry are removed (an entry the reader has not read
-- gives its channels' counts back) only when it can matter: a channel looks
-- full, or the inbox holds more than a reader that keeps up leaves behind.
-- Probing on every send cost about a quarter of the script's time.
local stream, counts = KEYS[1], KEYS[2]

local function accepted_channels()
  local accepted = {}
  for i = 4, #ARGV, 2 do
    local queued = tonumber(redis.call('HGET', counts, ARGV[i]) or '0')
    if queued < tonumber(ARGV[i + 1]) then accepted[#accepted + 1] = ARGV[i] end
  end
  return accepted
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

local accepted = accepted_channels()
if #accepted < (#ARGV - 3) / 2 or redis.call('XLEN', stream) > INBOX_BACKLOG then
  expire_old_entries()
  accepted = accepted_channels()
end
if #accepted == 0 then return 0 end

redis.call('XADD', stream, '*', 'c', table.concat(accepted, ','), 'm', ARGV[1])
for _, ch in ipairs(accepted) do redis.call('HINCRBY', counts, ch, 1) end
redis.call('EXPIRE', stream, ARGV[3])
redis.call('EXPIRE', counts, ARGV[3])
return #accepted
