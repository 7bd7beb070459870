-- Helpers of the team scripts, prepended after common.lua.

-- Move one entry of a channel to the channel's dead-letter stream and
-- acknowledge it in the team, in one step. `why` holds team, consumer,
-- deliveries, reason, maxlen and ttl.
local function dead_letter(stream, dead, id, fields, why)
  redis.call('XADD', dead, 'MAXLEN', '=', why.maxlen, '*',
    'm', field(fields, 'm') or '', 'id', id, 'team', why.team, 'consumer', why.consumer,
    'deliveries', tostring(why.deliveries), 'reason', why.reason)
  redis.call('EXPIRE', dead, why.ttl)
  redis.call('XACK', stream, why.team, id)
end
