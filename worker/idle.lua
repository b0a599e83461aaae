-- Of the given lanes, those with no dispatch message in flight (no wake marker), and
-- whether their queue is empty: the reconciler's check of many lanes in one call.
-- KEYS: none (lane keys are built from ARGV, so this runs on a single Redis, not a cluster)
-- ARGV[1] key prefix before the userId  ARGV[2] wake suffix  ARGV[3] queue suffix
-- ARGV[4..] userIds
-- Returns a flat list: userId, empty (1 or 0), userId, empty, …
local out = {}
for i = 4, #ARGV do
  local base = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', base .. ARGV[2]) == 0 then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = 1 - redis.call('EXISTS', base .. ARGV[3])
  end
end
return out
