"""The Lua scripts of `RedisStore`: every check-then-write, decided inside Redis.

Each has a header saying its KEYS, its ARGV and what it returns. Keys come
from `hub.store.keys.Keys` (all under one hash tag, so a script may touch
several); every key a script writes gets its TTL in the same script.
"""

# KEYS[1] presence key, KEYS[2] hubs zset, KEYS[3] the hub's node hash,
# KEYS[4] the hub's inbox stream
# ARGV[1] hub id, ARGV[2] presence ttl ms, ARGV[3] hubs zset ttl ms, ARGV[4] inbox ttl ms,
# ARGV[5] '1' when the hub has nodes (so its node hash must exist)
# Renews the hub's presence, its node hash and its inbox in one call.
# Returns 1 when the presence key existed before (and, for a hub with nodes, its node
# hash did), 0 when it was (re)created: what the hub published may be gone.
ANNOUNCE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local existed = redis.call('EXISTS', KEYS[1])
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  existed = 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return existed
"""

# KEYS[1] hubs zset
# Returns the ids of hubs whose presence has not lapsed (score > Redis clock).
LIVE_HUBS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# KEYS[1..n] the owner hashes of n nodes, then KEYS[n+1] hubs zset, KEYS[n+2] beats zset,
# KEYS[n+3] boots hash
# ARGV[1] claiming hub id, ARGV[2] lease ttl ms, ARGV[3] '1' to take over a live owner,
# ARGV[4] the claiming hub's boot token, ARGV[5] hub_timeout_ms
# Returns per node {epoch, owner}: epoch > 0 when the claim holds (owner = ARGV[1]),
# epoch = -1 when another live hub owns the node (owner = that hub).
# An owner counts as live while its presence has not lapsed, its last beat is within
# hub_timeout_ms (a hub that stopped answering loses its nodes to the hubs they
# reconnect to) and it runs the boot that claimed the node (a hub restarted under the
# same id does not hold its previous run's nodes).
# A new epoch is max(old + 1, Redis clock in ms), so it grows even after the
# old lease's key has expired and its epoch is forgotten. Renewing one's own
# claim (same boot) keeps the epoch. One node (a register, a takeover), many (a
# reconnect storm's registrations of one loop turn) or a batch of lease renewals:
# one call.
CLAIM_MANY = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = #KEYS - 3
local hubs, beats, boots = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local out = {}
for i = 1, n do
  local cur = redis.call('HMGET', KEYS[i], 'hub', 'epoch', 'boot')
  local hub, epoch, boot = cur[1], tonumber(cur[2]), cur[3]
  if hub == ARGV[1] and (not boot or boot == ARGV[4]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[i] = {epoch, hub}
  else
    local taken = false
    if hub and hub ~= '' and hub ~= ARGV[1] and ARGV[3] ~= '1' then
      local alive = redis.call('ZSCORE', hubs, hub)
      local beat = redis.call('ZSCORE', beats, hub)
      local running = redis.call('HGET', boots, hub)
      if alive and tonumber(alive) > now
          and (not beat or now - tonumber(beat) <= tonumber(ARGV[5]))
          and (not boot or not running or running == boot) then
        out[i] = {-1, hub}
        taken = true
      end
    end
    if not taken then
      local new = now
      if epoch and epoch + 1 > new then new = epoch + 1 end
      redis.call('HSET', KEYS[i], 'hub', ARGV[1], 'epoch', new, 'boot', ARGV[4])
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      out[i] = {new, ARGV[1]}
    end
  end
end
return out
"""

# KEYS[1] beats zset, KEYS[2] boots hash
# ARGV[1] hub id, ARGV[2] its boot token, ARGV[3] ttl ms of both keys
# Records this hub's liveness beat (Redis clock) and its run's boot token; returns
# {hub, ms since its last beat, boot token, ...} for every hub that beats.
BEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local beats = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #beats, 2 do
  out[#out + 1] = beats[i]
  out[#out + 1] = now - tonumber(beats[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[2], beats[i]) or ''
end
return out
"""

# KEYS[1] owner hash. ARGV[1] hub id, ARGV[2] epoch, ARGV[3] the hub's boot token.
# Returns 1 when released: the claim is this hub's, at that epoch or made by this run
# (a renewal after a Redis restart made a new epoch that the caller may not know yet).
# The hash stays (owner '' and its TTL) so the next claim's epoch is still higher.
RELEASE_NODE = """
local cur = redis.call('HMGET', KEYS[1], 'hub', 'epoch', 'boot')
if cur[1] == ARGV[1] and (cur[2] == ARGV[2] or cur[3] == ARGV[3]) then
  redis.call('HSET', KEYS[1], 'hub', '')
  return 1
end
return 0
"""

# KEYS[2i-1] the request binding of item i, KEYS[2i] the inbox its envelope goes to
# (any key when it sends nothing)
# ARGV[1] inbox MAXLEN, ARGV[2] inbox ttl ms; then four per item from ARGV[3]:
# job id, binding ttl ms, '1' to send, the envelope
# Binds each request unless it is bound (SET NX GET); only a binding made here
# sends its envelope. Returns per item the job it was already bound to, or ''.
BIND_MANY = """
local out = {}
for i = 1, #KEYS / 2 do
  local a = 3 + (i - 1) * 4
  local old = redis.call('SET', KEYS[2 * i - 1], ARGV[a], 'PX', ARGV[a + 1], 'NX', 'GET')
  if old then
    out[i] = old
  else
    out[i] = ''
    if ARGV[a + 2] == '1' then
      redis.call('XADD', KEYS[2 * i], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[a + 3])
      redis.call('PEXPIRE', KEYS[2 * i], ARGV[2])
    end
  end
end
return out
"""

# KEYS[i] a job record key. ARGV[1] ttl ms, ARGV[1 + i] the record for KEYS[i].
SAVE_MANY = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
"""

# KEYS[1] request binding. ARGV[1] expected job id. Returns 1 when deleted.
RELEASE_REQUEST = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] request binding. ARGV[1] old job id, ARGV[2] new job id, ARGV[3] ttl ms.
# Returns 1 when the binding moved to the new job.
REBIND_REQUEST = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] the hub's node hash. ARGV[1] node id, ARGV[2] entry, ARGV[3] ttl ms.
PUBLISH_NODE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] the hub's node hash. ARGV[1] ttl ms, ARGV[2] how many removals (r);
# ARGV[3..2+r] node ids to remove; then pairs node id, entry.
# Withdraws, then publishes, in one call; returns the number of entries published.
PUBLISH_NODES = """
local r = tonumber(ARGV[2])
if r > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + r)) end
local first = 3 + r
local n = 0
for i = first, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  n = n + 1
end
if n > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# KEYS[i] an inbox stream per envelope (repeats allowed)
# ARGV[1] MAXLEN, ARGV[2] ttl ms, ARGV[2 + i] the envelope for KEYS[i]
# Appends every envelope in order; returns how many.
SEND_MANY = """
for i, key in ipairs(KEYS) do
  redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i + 2])
  redis.call('PEXPIRE', key, ARGV[2])
end
return #KEYS
"""

# KEYS[1] dead-letter stream, KEYS[2] the inbox the entry came from
# ARGV[1] MAXLEN, ARGV[2] ttl ms, ARGV[3] hub, ARGV[4] entry id, ARGV[5] envelope,
# ARGV[6] why, ARGV[7] consumer group. Moves the entry; returns 1.
DEAD_LETTER = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'hub', ARGV[3], 'entry', ARGV[4], 'e', ARGV[5], 'why', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XACK', KEYS[2], ARGV[7], ARGV[4])
return 1
"""

# KEYS[1] the dead hub's inbox, KEYS[2] its node hash, KEYS[3] its reaper lock,
# KEYS[4] hubs zset, KEYS[5] beats zset, KEYS[6] boots hash
# ARGV[1] the dead hub's id, ARGV[2] the last inbox entry id drained ('' = drop anyway),
# ARGV[3] the reaping hub's id
# Forgets a drained hub, unless an entry newer than ARGV[2] arrived since (returns 0:
# drain again) or another hub holds the reaper lock (returns {-1, holder}).
# Returns 1 when dropped.
DROP_HUB = """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[3] then return {-1, holder} end
if ARGV[2] ~= '' then
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if newest[1] then
    local nm, ns = string.match(newest[1][1], '(%d+)-(%d+)')
    local lm, ls = string.match(ARGV[2], '(%d+)-(%d+)')
    nm, ns, lm, ls = tonumber(nm), tonumber(ns), tonumber(lm), tonumber(ls)
    if nm > lm or (nm == lm and ns > ls) then return 0 end
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""

# KEYS[1] the room's member hash
# ARGV[1] member id, ARGV[2] its entry, ARGV[3] max members, ARGV[4] ttl ms
# Adds the member unless the room holds max members already (a member joining again is
# updated in place). Returns {1, field, value, field, value, ...} (every member after
# the join) or {0} when the room is full.
ROOM_JOIN = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 1)
return out
"""

