-- Called by an idle reader whose local buffers are empty: when nothing waits
-- unread in the inbox either, no message is queued for any of its channels,
-- so the counts start again from zero. This heals counts that drifted up when
-- a give-back was lost with its connection (CLIENT KILL, failover).
-- KEYS[1] inbox stream, KEYS[2] counts hash.
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
