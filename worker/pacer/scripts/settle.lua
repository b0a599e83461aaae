-- Settle a lane after a try: give up a reservation, put a request back at its place
-- (a 429 keeps the head) or drop it, and push the next slot forward.
-- KEYS[1] lane queue (zset)  KEYS[2] lane state (hash)  KEYS[3] lane wake (string)
-- ARGV[1] member  ARGV[2] token ("" for none)  ARGV[3] action: "keep" | "requeue" | "drop"
-- ARGV[4] score  ARGV[5] not_before_us ("" for none)  ARGV[6] state_ttl_ms
-- Returns the lane's next_free (microseconds, Redis clock).
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'holder') == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'holder', 'hold_member', 'hold_slot', 'hold_until')
end
if ARGV[3] == 'requeue' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
elseif ARGV[3] == 'drop' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
end
local nf = tonumber(redis.call('HGET', KEYS[2], 'next_free') or '0')
if ARGV[5] ~= '' and tonumber(ARGV[5]) > nf then
  nf = tonumber(ARGV[5])
  redis.call('HSET', KEYS[2], 'next_free', nf)
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return nf
