-- Decide whether the head of a lane needs a dispatch message, and when; optionally put a
-- new request in the lane first (enqueue), all in one round trip.
-- KEYS[1] lane queue (zset)  KEYS[2] lane state (hash)  KEYS[3] lane wake (string)
-- ARGV[1] lead_us  ARGV[2] max_countdown_us  ARGV[3] grace_ms  ARGV[4] force ("1" to ignore the wake)
-- ARGV[5] member to add ("" for none)  ARGV[6] its score  ARGV[7] member it replaces ("" for none)
-- ARGV[8] not_before_us: first raise next_free to at least this ("" for none; the time a
--   call actually left, plus the gap)  ARGV[9] state_ttl_ms (with ARGV[8])
-- Returns {head, due_us, now, rank, next_free}: head is "" when nothing is to be sent (empty
-- lane, a message already in flight for the head, or a slot too far off), else a message for
-- head is due at due_us; rank is the added member's 0-based place (-1 if none added).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rank = -1
if ARGV[7] and ARGV[7] ~= '' then redis.call('ZREM', KEYS[1], ARGV[7]) end
if ARGV[5] and ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[6], ARGV[5])
  rank = redis.call('ZRANK', KEYS[1], ARGV[5])
end
local nf = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
if ARGV[8] and ARGV[8] ~= '' and tonumber(ARGV[8]) > nf then
  nf = tonumber(ARGV[8])
  redis.call('HSET', KEYS[2], 'next_free', nf)
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if not head then return {'', 0, now, rank, nf} end
if ARGV[4] ~= '1' and redis.call('GET', KEYS[3]) == head then return {'', 0, now, rank, nf} end
local hold_until = tonumber(redis.call('HGET', KEYS[2], 'hold_until') or '0')
local due = math.max(now, nf - tonumber(ARGV[1]), hold_until)
if due - now > tonumber(ARGV[2]) then return {'', 0, now, rank, nf} end
local ttl = math.floor((due - now) / 1000) + tonumber(ARGV[3])
redis.call('SET', KEYS[3], head, 'PX', ttl)
return {head, due, now, rank, nf}
