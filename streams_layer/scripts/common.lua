-- Shared helpers, prepended to every script by streams_layer.scripts.

-- A comma-separated argument as a list; a single item skips the pattern
-- matcher, which costs about 2 us per call (most sends name one channel).
local function split(text)
  if not string.find(text, ',', 1, true) then return {text} end
  local out = {}
  for item in string.gmatch(text, '[^,]+') do out[#out + 1] = item end
  return out
end

-- Commands over long key lists go in slices: unpack() of a very long list
-- would overflow Lua's stack.
local SLICE = 1000

-- HMGET of any number of fields, as numbers (a missing field is 0).
local function hmget_numbers(hash, fields)
  local out = {}
  for first = 1, #fields, SLICE do
    local got = redis.call('HMGET', hash, unpack(fields, first, math.min(first + SLICE - 1, #fields)))
    for i = 1, #got do out[first + i - 1] = tonumber(got[i] or '0') end
  end
  return out
end

-- redis.call(command, key, ...) over ``args`` in slices of ``per_call`` items.
local function call_sliced(command, key, args, per_call)
  for first = 1, #args, per_call do
    redis.call(command, key, unpack(args, first, math.min(first + per_call - 1, #args)))
  end
end

-- Give ``key`` a TTL of ``ttl_s`` unless it still has more than ``ttl_s``
-- less KEY_TTL_SLACK_MS: a key written many times a second has its TTL set a
-- few times a second, not on every write. PTTL is a read; EXPIRE is a write,
-- which in a script costs several times a read (the send script's two
-- EXPIREs were about a fifth of its time in a ping-pong). Keys live at least
-- expiry + KEY_TTL_MARGIN_S - KEY_TTL_SLACK_MS after the last write, which
-- stays longer than any message they hold.
local function keep_alive(key, ttl_s)
  local left = redis.call('PTTL', key)  -- -2: no such key, -1: no TTL
  if left ~= -2 and left < tonumber(ttl_s) * 1000 - KEY_TTL_SLACK_MS then
    redis.call('EXPIRE', key, ttl_s)
  end
end

-- Give a group's version key (KEYS of group_add/group_discard) a new value:
-- the server's time in microseconds, or one more than the old value if that
-- is not smaller. A version seen before a flush never comes back after it.
local function bump_version(key, ttl_s)
  local t = redis.call('TIME')
  local version = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local old = tonumber(redis.call('GET', key) or '0')
  if version <= old then version = old + 1 end
  redis.call('SET', key, string.format('%.0f', version), 'EX', ttl_s)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Stream IDs as {ms, seq} numbers, compared without string tricks.
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end

local function id_after(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- XINFO GROUPS as a list of {name=..., last=..., pending=...} tables.
local function groups_of(stream)
  local out = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    out[#out + 1] = {
      name = field(g, 'name'),
      last = field(g, 'last-delivered-id'),
      pending = tonumber(field(g, 'pending')),
      lag = field(g, 'lag'),  -- Redis 7+: entries not yet delivered; false if unknown
    }
  end
  return out
end

-- Trim a channel stream (``groups``: XINFO GROUPS already read, or nil): entries older than limit_ms go, and so does every
-- entry that each team has received and acknowledged. An entry still pending
-- in some team stays until it expires (at-least-once teams need it).
local function trim_channel(stream, limit_ms, groups)
  local floor = {limit_ms, 0}
  local delivered = nil
  for _, g in ipairs(groups or groups_of(stream)) do
    local lower
    if g.pending > 0 then
      lower = parse_id(redis.call('XPENDING', stream, g.name)[2])
    else
      lower = parse_id(g.last)
      lower[2] = lower[2] + 1
    end
    if delivered == nil or id_after(delivered, lower) then delivered = lower end
  end
  if delivered ~= nil and id_after(delivered, floor) then floor = delivered end
  redis.call('XTRIM', stream, 'MINID', floor[1] .. '-' .. floor[2])
end

-- Messages waiting in a channel stream for its slowest team (all of them
-- while no team exists); at least ``limit`` exactly when that many wait (a
-- smaller result may be an upper bound). A team's waiting messages are the
-- entries after its last-delivered id, not the ones it holds pending.
-- XINFO's lag and XLEN only bound them: Redis does not lower lag (entries
-- added - entries read) when XTRIM removes entries a team never read, so
-- after an expiry it stays high for good, and XLEN counts pending entries.
-- A team whose bound reaches ``limit`` has its entries counted with one
-- XRANGE on the shorter side of its last-delivered id: at most ``limit``
-- entries after it, or at most XLEN - limit + 1 up to it (a channel kept
-- full by a slow reader: about one entry per rejected send).
local function queued_in_channel(stream, groups, limit)
  local length = redis.call('XLEN', stream)
  local worst = nil
  for _, g in ipairs(groups or groups_of(stream)) do
    local queued = g.lag and math.min(tonumber(g.lag), length) or length
    if queued >= limit then
      local spare = length - limit  -- delivered entries that leave it full
      if spare < limit then
        local delivered = redis.call('XRANGE', stream, '-', g.last,
                                     'COUNT', spare + 1)
        queued = length - #delivered
      else
        queued = #redis.call('XRANGE', stream, '(' .. g.last, '+',
                             'COUNT', limit)
      end
    end
    if worst == nil or queued > worst then worst = queued end
    if worst >= limit then return worst end
  end
  return worst or length
end
