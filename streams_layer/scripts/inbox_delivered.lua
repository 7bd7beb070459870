-- The last entry ID that Redis handed to an inbox's reader group, or false.
-- KEYS[1] inbox stream; ARGV[1] group name.
-- After a read dropped with its connection, the entries between what the
-- reader last saw and this ID were delivered to nobody; the reader fetches
-- them again with XRANGE.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
for _, g in ipairs(groups_of(KEYS[1])) do
  if g.name == ARGV[1] then return g.last end
end
return false
