-- Take the reserved slot right before the call: the lane's next call may start no
-- earlier than interval_us after *now*, whenever the reservation was granted.
-- KEYS[1] lane queue (zset)  KEYS[2] lane state (hash)  KEYS[3] lane wake (string)
-- ARGV[1] member  ARGV[2] token  ARGV[3] interval_us (interval plus guard)  ARGV[4] state_ttl_ms
-- Returns {"fired", now, waiting} (waiting: entries left in the lane, so 0 means no head to
-- wake), {"early", now, not_before}, {"lost", now} or {"late", now}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('HGET', KEYS[2], 'holder') ~= ARGV[2] then return {'lost', now} end
local slot = tonumber(redis.call('HGET', KEYS[2], 'hold_slot'))
local nf = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
local not_before = math.max(slot, nf)
if now < not_before then return {'early', now, not_before} end
if now > tonumber(redis.call('HGET', KEYS[2], 'hold_until')) then
  redis.call('HDEL', KEYS[2], 'holder', 'hold_member', 'hold_slot', 'hold_until')
  return {'late', now}
end
redis.call('HSET', KEYS[2], 'next_free', now + tonumber(ARGV[3]), 'last_fire', now)
redis.call('HDEL', KEYS[2], 'holder', 'hold_member', 'hold_slot', 'hold_until')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return {'fired', now, redis.call('ZCARD', KEYS[1])}
