-- Remove a consumer from its team, but only when it holds no pending entry
-- (XGROUP DELCONSUMER would drop them from the PEL, and so lose them).
-- KEYS[1] channel stream; ARGV[1] team, ARGV[2] consumer.
-- Returns the number of entries the consumer still holds (0: removed).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then return 0 end
for _, c in ipairs(consumers) do
  if field(c, 'name') == ARGV[2] then
    local pending = tonumber(field(c, 'pending'))
    if pending == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
    return pending
  end
end
return 0
