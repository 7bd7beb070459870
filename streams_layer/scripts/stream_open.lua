-- Make sure a stream and one of its consumer groups exist.
-- KEYS[1] stream; ARGV[1] group name, ARGV[2] key TTL (s).
-- Returns the server's time in ms (the layer's clock follows Redis's).
-- The group starts at 0 so that messages sent before the first receive() are read.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return now_ms()
end
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
  return redis.error_reply(ok.err)
end
return now_ms()
