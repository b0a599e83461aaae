-- Decide whether the head of a lane needs a dispatch message, and when.
-- KEYS[1] lane queue (zset)  KEYS[2] lane state (hash)  KEYS[3] lane wake (string)
-- ARGV[1] lead_us  ARGV[2] max_countdown_us  ARGV[3] grace_ms  ARGV[4] force ("1" to ignore the wake)
-- Returns {} when nothing is to be sent (empty lane, a message already in flight for the
-- head, or a slot too far off), else {head, due_us, now}: send for head at due_us.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if not head then return {} end
if ARGV[4] ~= '1' and redis.call('GET', KEYS[3]) == head then return {} end
local nf = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
local hold_until = tonumber(redis.call('HGET', KEYS[2], 'hold_until') or '0')
local due = math.max(now, nf - tonumber(ARGV[1]), hold_until)
if due - now > tonumber(ARGV[2]) then return {} end
local ttl = math.floor((due - now) / 1000) + tonumber(ARGV[3])
redis.call('SET', KEYS[3], head, 'PX', ttl)
return {head, due, now}
