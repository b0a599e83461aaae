-- KEYS: each lane's state hash (keys.lane_state), any number. ARGV: none.
-- Returns each lane's `next_free` (microseconds, Redis clock), false where it has none.
-- One command for many lanes: a pipeline of one HGET per lane cost the client several times
-- as much (docs/BENCHMARKS.md, design measurements).
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'next_free') or false
end
return out
