-- Reserve the next slot of a user's lane for the request at its head.
-- KEYS[1] lane queue (zset)  KEYS[2] lane state (hash)  KEYS[3] lane wake (string)
-- ARGV[1] member  ARGV[2] score (-priority)  ARGV[3] token (unique per try)
-- ARGV[4] lead_us  ARGV[5] max_late_us  ARGV[6] floor_us ("" when unknown)  ARGV[7] state_ttl_ms
-- ARGV[8] "1": floor_us only stands in for a missing state (a lane SQL says needs no refill),
--   it does not raise an existing next_free
-- Returns {"floor", now} when the pacer state is gone and SQL must give a floor,
-- {"behind", now, head}, {"busy", now, hold_until}, {"wait", now, next_free}
-- or {"granted", now, slot}. Times are microseconds on the Redis server's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local member, token = ARGV[1], ARGV[3]
local lead, max_late = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[6] == '' then return {'floor', now} end
  redis.call('HSET', KEYS[2], 'next_free', ARGV[6])
elseif ARGV[6] ~= '' and ARGV[8] ~= '1' then
  local nf0 = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
  if tonumber(ARGV[6]) > nf0 then redis.call('HSET', KEYS[2], 'next_free', ARGV[6]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], member)
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if head ~= member then return {'behind', now, head} end
local holder = redis.call('HGET', KEYS[2], 'holder')
local hold_until = tonumber(redis.call('HGET', KEYS[2], 'hold_until') or '0')
if holder and holder ~= token and hold_until > now then
  return {'busy', now, hold_until}
end
local nf = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
if now + lead < nf then return {'wait', now, nf} end
local slot = math.max(now, nf)
redis.call('HSET', KEYS[2], 'holder', token, 'hold_member', member,
  'hold_slot', slot, 'hold_until', slot + max_late)
return {'granted', now, slot}
