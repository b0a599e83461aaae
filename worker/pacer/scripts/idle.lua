-- Of the given lanes, those with no dispatch message in flight (no wake marker), and
-- whether their queue is empty: the reconciler's check of many lanes in one call.
-- KEYS: per lane, its wake key then its queue key (keys.lane_wake, keys.lane_queue)
-- ARGV: the lanes' userIds, in the same order
-- Returns a flat list: userId, empty (1 or 0), userId, empty, …
local out = {}
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = 1 - redis.call('EXISTS', KEYS[2 * i])
  end
end
return out
