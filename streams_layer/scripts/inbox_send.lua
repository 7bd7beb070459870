-- Append one message for one or more process-specific channels of an inbox.
-- KEYS[1] inbox stream, KEYS[2] counts hash
-- ARGV[1] payload, ARGV[2] expiry_ms, ARGV[3] key TTL (s),
-- ARGV[4] the channels' capacity: one number for all, or one per channel, comma-separated,
-- ARGV[5] the channels, comma-separated (channel names hold no commas); a
-- send() names one,
-- ARGV[6] '1' for a group message, '0' for a send(),
-- ARGV[7] messages of the channel received since the last give-back (a send()
-- to the sender's own channel), given back first.
-- Channels at capacity are left out. Returns the number of channels the
-- message was queued for, or -1 for all of them.
--
-- What a channel holds, counted against its capacity:
--  * messages send() queued: counted in the hash at once (channel -> count);
--  * group messages: not counted per channel here. The hash counts group
--    entries added ('~g') and read by the reader ('~r', reported with the
--    reader's capacity updates, which also hold one count per channel for
--    each group message read and not yet received). So ~g - ~r bounds the
--    group entries still unread for any channel; a channel that this bound
--    could fill has its unread group entries counted (see accepted_channels),
--    and an inbox with GROUP_UNREAD_FACTOR x capacity unread group entries
--    (a reader that far behind, or gone) takes no more.
-- A group send to members with no queued count (the usual case) is one
-- XADD: at a thousand members, reading, raising and writing back a count per
-- member took about 0.8 ms of Lua per 500 members of one inbox.
-- ('~' cannot occur in a channel name.)
--
-- Entries older than expiry are removed (an unread entry gives back what it
-- held) only when it can matter: a channel looks full, or the inbox holds
-- more than a reader that keeps up leaves behind.
local stream, counts = KEYS[1], KEYS[2]
local listed = ARGV[5]
local is_group = ARGV[6] == '1'

-- A send() its channel has room for, with no backlog to look through: the
-- general path below decides the same, through helpers that cost about as
-- much Lua as its Redis commands (this script called alone, pipelined:
-- 25.5-27.1 us per call without this path, 18.4-19.5 us with it, medians of
-- 5 x 3,000 calls; in a two-process ping-pong 39-46 against 31-34 us).
if not is_group and redis.call('XLEN', stream) <= INBOX_BACKLOG then
  local got = redis.call('HMGET', counts, listed, GROUP_ADDED_FIELD, GROUP_READ_FIELD)
  local queued = math.max(tonumber(got[1] or '0') - tonumber(ARGV[7]), 0)
  local unread = math.max(tonumber(got[2] or '0') - tonumber(got[3] or '0'), 0)
  if queued + unread < tonumber(ARGV[4]) then
    redis.call('XADD', stream, '*', 'c', listed, 'm', ARGV[1])
    redis.call('HSET', counts, listed, queued + 1)
    keep_alive(stream, ARGV[3])
    keep_alive(counts, ARGV[3])
    return 1
  end
end

local capacities = split(ARGV[4])
local least = nil
for i = 1, #capacities do
  capacities[i] = tonumber(capacities[i])
  if least == nil or capacities[i] < least then least = capacities[i] end
end

-- An upper bound of the group entries not read yet, and how many of the
-- hash's fields are not channels.
local function unread_bound()
  local added_read = redis.call('HMGET', counts, GROUP_ADDED_FIELD, GROUP_READ_FIELD)
  local unread = tonumber(added_read[1] or '0') - tonumber(added_read[2] or '0')
  local others = (added_read[1] and 1 or 0) + (added_read[2] and 1 or 0)
  if unread < 0 then unread = 0 end
  return unread, others
end

-- The reader's position (its group's last-delivered ID), read once per call.
local reader_last = nil
local function read_position()
  if reader_last == nil then
    reader_last = '0-0'
    for _, g in ipairs(groups_of(stream)) do reader_last = g.last end
  end
  return reader_last
end

-- Unread group entries naming each channel of ``wanted`` (a list): a table
-- channel -> count, or nil when more than UNREAD_SCAN entries are unread.
local function unread_for(wanted)
  local entries = redis.call('XRANGE', stream, '(' .. read_position(), '+', 'COUNT', UNREAD_SCAN + 1)
  if #entries > UNREAD_SCAN then return nil end
  local found = {}
  for _, ch in ipairs(wanted) do found[ch] = 0 end
  for _, entry in ipairs(entries) do
    if field(entry[2], 'g') then
      local listed_in = ',' .. (field(entry[2], 'c') or '') .. ','
      for _, ch in ipairs(wanted) do
        if string.find(listed_in, ',' .. ch .. ',', 1, true) then found[ch] = found[ch] + 1 end
      end
    end
  end
  return found
end

-- The channels with room, and their counts (numbers) as HMGET read them.
-- A channel has room when its count plus the unread bound is below its
-- capacity. Otherwise the unread group entries naming it are counted, when
-- that costs at most UNREAD_SCAN string searches (a send() names one
-- channel: always). A group send to more such members than that accepts
-- those below capacity by their own count, and the reader drops a group
-- message for a member whose local buffer is full.
local function accepted_channels(bound)
  local channels = split(listed)
  local queued = hmget_numbers(counts, channels)
  local doubtful = {}
  for i, ch in ipairs(channels) do
    if queued[i] + bound >= (capacities[i] or capacities[1]) then doubtful[#doubtful + 1] = ch end
  end
  local found = {}
  if #doubtful > 0 and bound > 0 and #doubtful * bound <= UNREAD_SCAN then
    found = unread_for(doubtful)
  end
  local accepted, counted = {}, {}
  for i, ch in ipairs(channels) do
    local capacity = capacities[i] or capacities[1]
    local room = queued[i] < capacity
    if room and queued[i] + bound >= capacity then
      if found == nil then
        room = false
      elseif found[ch] ~= nil then
        room = queued[i] + found[ch] < capacity
      end
    end
    if room then
      accepted[#accepted + 1] = ch
      counted[#counted + 1] = queued[i]
    end
  end
  return accepted, counted, #channels
end

local function expire_old_entries()
  local limit_ms = now_ms() - tonumber(ARGV[2])
  local old = redis.call('XRANGE', stream, '-', '(' .. limit_ms .. '-0', 'COUNT', EXPIRE_BATCH)
  if #old == 0 then return end
  local read_upto = parse_id(read_position())
  for _, entry in ipairs(old) do
    if id_after(parse_id(entry[1]), read_upto) then
      if field(entry[2], 'g') then
        redis.call('HINCRBY', counts, GROUP_READ_FIELD, 1)
      else
        for ch in string.gmatch(field(entry[2], 'c') or '', '[^,]+') do
          if redis.call('HINCRBY', counts, ch, -1) <= 0 then redis.call('HDEL', counts, ch) end
        end
      end
    end
    redis.call('XDEL', stream, entry[1])
  end
end

local function decide()
  local bound, others = unread_bound()
  if is_group then
    if bound >= least * GROUP_UNREAD_FACTOR then
      -- The reader is that far behind (or gone): no more group entries.
      return {}, {}, 1
    end
    if bound < least and redis.call('HLEN', counts) == others then
      -- No channel of this inbox has a queued count (only ~g/~r, if anything,
      -- are in the hash), and the unread group entries cannot fill any.
      return nil
    end
  end
  return accepted_channels(bound)
end

local received = tonumber(ARGV[7])
if received > 0 and redis.call('HINCRBY', counts, listed, -received) <= 0 then
  redis.call('HDEL', counts, listed)
end

local backlog = redis.call('XLEN', stream) > INBOX_BACKLOG
if backlog then expire_old_entries() end
local accepted, counted, total = decide()
if accepted ~= nil and #accepted < total and not backlog then
  expire_old_entries()
  accepted, counted, total = decide()
end

local entry = listed
if accepted ~= nil then
  if #accepted == 0 then return 0 end
  if #accepted < total then entry = table.concat(accepted, ',') end
end
if is_group then
  redis.call('XADD', stream, '*', 'c', entry, 'm', ARGV[1], 'g', '1')
  redis.call('HINCRBY', counts, GROUP_ADDED_FIELD, 1)
else
  redis.call('XADD', stream, '*', 'c', entry, 'm', ARGV[1])
  redis.call('HSET', counts, accepted[1], counted[1] + 1)
end
keep_alive(stream, ARGV[3])
keep_alive(counts, ARGV[3])
if accepted == nil then return -1 end  -- all of them (the fast path never split the list)
return #accepted
