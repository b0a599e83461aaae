-- KEYS: each lane's state hash (keys.lane_state), any number. ARGV: none.
-- Returns every lane's `next_free` (microseconds, Redis clock) in KEYS' order, joined by
-- commas in one string, an empty field where a lane has none.
-- One command for many lanes: a pipeline of one HGET per lane cost the client several times
-- as much (docs/BENCHMARKS.md, design measurements); one string rather than a reply per lane
-- spares the client the parsing of a thousand replies.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'next_free') or ''
end
return table.concat(out, ',')
