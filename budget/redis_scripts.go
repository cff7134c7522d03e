package budget

import "github.com/redis/go-redis/v9"

// The scripts of the Redis budget. Every instant is in whole microseconds
// of Redis's clock (TIME). Numbers reach Redis as strings formatted with
// %.0f: Lua's own tostring writes 14 significant digits, too few for a
// microsecond of today.
//
// Keys: the calls, a sorted set whose members are call ids and whose
// scores are the instant each call stops running (its lease's end while it
// runs, its end once it ended), so that a call counts in a window of
// length Per at now exactly when its score is after now-Per; the pause, a
// string holding the end of the Retry-After pause in force; the waiting
// replicas, a hash from a replica's id to "PRIORITY:DUE", the priority of
// its first waiter and the instant it will ask again; the epoch, a hash
// whose field "at" is the instant the state was created (the marker: a
// Redis that is new or lost its data has none) and whose field "lost" is 1
// when a replica that had seen an earlier epoch seeded this one; the
// seeded calls, a sorted set like the calls, of the calls the replicas
// brought back into this epoch.

// acquireScript checks every window and the pause and takes a call in one
// step.
//
// KEYS: calls, pause, waiting, epoch, seeded. ARGV: replica id, priority,
// call id, lease, hold (how long past its due instant a registered waiter
// holds back lower priorities), settle (how long after that instant, or
// after now if it has passed, a caller held back asks again), a pause to
// apply first (0: none), how long the calls key is kept, the epoch the
// replica seeded last ("" if none), the number of windows, then each
// window's length and calls.
//
// It returns {1, now, 0} for a grant, or {0, now, wait}: the instant a call
// of this priority may be granted, exactly when it depends on ended calls,
// the pause and the calls assumed for a lost state, and otherwise the
// earliest it could be (a running call counted as ending now); for a
// caller held back by a higher waiter of another replica, at least settle
// after that waiter's due instant. It returns {2, now, 0}, and changes
// nothing, when the epoch is missing or is not the one the replica seeded:
// the replica runs seedScript first.
//
// The gap: when the epoch is marked lost, the calls of replicas that died
// before it was created are unknown, and each window assumes the worst
// the limits allowed: that at the epoch's creation R the window was full.
// Its calls not brought back (Calls less the seeded calls counting in the
// window at R) count as phantom calls running until R plus the lease, the
// latest such a call can have ended, so that they count until a window
// after that.
var acquireScript = redis.NewScript(`
local function fmt(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local calls, pausek, waitk, epochk, seededk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local rid, prio, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local lease, hold, settle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local pausefor, keep = tonumber(ARGV[7]), tonumber(ARGV[8])
local ep = redis.call('HMGET', epochk, 'at', 'lost')
if not ep[1] or ep[1] ~= ARGV[9] then return {2, now, 0} end
local reset, lost = tonumber(ep[1]), ep[2] == '1'
local n = tonumber(ARGV[10])
local function window(i) return tonumber(ARGV[11 + 2 * i]), tonumber(ARGV[12 + 2 * i]) end

local longest = 0
for i = 0, n - 1 do
  local per = window(i)
  if per > longest then longest = per end
end
redis.call('ZREMRANGEBYSCORE', calls, '-inf', fmt(now - longest))

local paused = tonumber(redis.call('GET', pausek) or '0') or 0
if pausefor > 0 and now + pausefor > paused then
  paused = now + pausefor
  redis.call('SET', pausek, fmt(paused), 'PX', fmt(math.ceil(pausefor / 1000) + 1000))
end

local next = now
if paused > next then next = paused end
local ghost = reset + lease -- the end of the phantom calls
for i = 0, n - 1 do
  local per, limit = window(i)
  local from = '(' .. fmt(now - per)
  local phantom = 0
  if lost and now < ghost + per then
    phantom = math.max(0, limit - redis.call('ZCOUNT', seededk, '(' .. fmt(reset - per), '+inf'))
  end
  local excess = redis.call('ZCOUNT', calls, from, '+inf') + phantom - limit + 1
  if excess > 0 then
    -- The excess-th call to stop counting, the phantom calls (all ending at
    -- ghost) in their place among the real ones.
    local before = 0
    if phantom > 0 then before = redis.call('ZCOUNT', calls, from, fmt(ghost)) end
    local at
    if phantom > 0 and excess > before and excess <= before + phantom then
      at = ghost
    else
      local k = excess
      if phantom > 0 and excess > before then k = excess - phantom end
      local e = redis.call('ZRANGEBYSCORE', calls, from, '+inf', 'WITHSCORES', 'LIMIT', k - 1, 1)
      at = math.min(tonumber(e[2]), now)
    end
    if at + per > next then next = at + per end
  end
end

local held = nil
local w = redis.call('HGETALL', waitk)
for j = 1, #w, 2 do
  local p, due = string.match(w[j + 1], '^(-?%d+):(%d+)$')
  p, due = tonumber(p), tonumber(due)
  if p == nil or due + hold <= now then
    redis.call('HDEL', waitk, w[j])
  elseif w[j] ~= rid and p > prio then
    if held == nil or due < held then held = due end
  end
end

if next <= now and held == nil then
  redis.call('ZADD', calls, fmt(now + lease), id)
  redis.call('PEXPIRE', calls, fmt(math.ceil(keep / 1000) + 1000))
  redis.call('HDEL', waitk, rid)
  return {1, now, 0}
end
local wake = next
if held ~= nil then wake = math.max(next, math.max(held, now) + settle) end
redis.call('HSET', waitk, rid, tostring(prio) .. ':' .. fmt(wake))
local ttl = math.ceil((wake - now + hold) / 1000) + 1000
if redis.call('PTTL', waitk) < ttl then redis.call('PEXPIRE', waitk, fmt(ttl)) end
return {0, now, wake - now}
`)

// doneScript records the end of a call that is still counted: KEYS calls,
// ARGV the call id. It returns the end instant.
var doneScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
end
return now
`)

// forgetScript takes back a call granted but never made: KEYS calls, ARGV
// the call id.
var forgetScript = redis.NewScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// pauseScript stops every call from starting for ARGV[1] microseconds from
// now, unless a longer pause is in force: KEYS pause. It returns the end of
// the pause in force.
var pauseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local e = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if e > cur then
  redis.call('SET', KEYS[1], string.format('%.0f', e), 'PX', string.format('%.0f', math.ceil(tonumber(ARGV[1]) / 1000) + 1000))
  return e
end
return cur
`)

// leaveScript takes a replica off the waiting hash: KEYS waiting, ARGV its
// id.
var leaveScript = redis.NewScript(`return redis.call('HDEL', KEYS[1], ARGV[1])`)

// timeScript returns Redis's clock: KEYS calls (named so that a cluster
// routes it to the budget's slot).
var timeScript = redis.NewScript(`
local t = redis.call('TIME')
return tonumber(t[1]) * 1000000 + tonumber(t[2])
`)

// windowsScript counts the calls of each window now, for the metrics,
// and changes nothing: KEYS calls, epoch, seeded. ARGV: the lease, then
// each window's length and calls. It returns one count per window: the
// calls whose score is after now less the window, and, while the state is
// marked lost, the phantom calls acquireScript adds for it.
var windowsScript = redis.NewScript(`
local function fmt(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ep = redis.call('HMGET', KEYS[2], 'at', 'lost')
local reset, lost = tonumber(ep[1] or '0') or 0, ep[2] == '1'
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV - 1, 2 do
  local per, limit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local n = redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now - per), '+inf')
  if lost and now < reset + lease + per then
    n = n + math.max(0, limit - redis.call('ZCOUNT', KEYS[3], '(' .. fmt(reset - per), '+inf'))
  end
  out[#out + 1] = n
end
return out
`)

// seedScript brings a replica's own calls back into the state, creating
// the epoch if it is missing: KEYS calls, pause, epoch, seeded. ARGV:
// the epoch the replica seeded last ("" if none: an epoch it has not seen
// means the state was lost, none at all that it is new), how long the calls and seeded keys are kept, a pause to apply
// (0: none), then pairs of a call id and the instant it stops counting.
// A call already present keeps its entry, so running it again, or several
// replicas running it at once, adds each call once. It returns the epoch's
// "at".
var seedScript = redis.NewScript(`
local function fmt(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local calls, pausek, epochk, seededk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local keep, pausefor = tonumber(ARGV[2]), tonumber(ARGV[3])
local known = ARGV[1]
local at = redis.call('HGET', epochk, 'at')
if not at then
  at = fmt(now)
  redis.call('DEL', seededk)
  local lost = '0'
  if known ~= '' then lost = '1' end
  redis.call('HSET', epochk, 'at', at, 'lost', lost)
elseif known ~= '' and known ~= at then
  redis.call('HSET', epochk, 'lost', '1')
end
if pausefor > 0 then
  local e = now + pausefor
  if e > (tonumber(redis.call('GET', pausek) or '0') or 0) then
    redis.call('SET', pausek, fmt(e), 'PX', fmt(math.ceil(pausefor / 1000) + 1000))
  end
end
if #ARGV > 3 then
  for j = 4, #ARGV - 1, 2 do
    redis.call('ZADD', calls, 'NX', ARGV[j + 1], ARGV[j])
    redis.call('ZADD', seededk, 'NX', ARGV[j + 1], ARGV[j])
  end
  local ttl = fmt(math.ceil(keep / 1000) + 1000)
  redis.call('PEXPIRE', calls, ttl)
  redis.call('PEXPIRE', seededk, ttl)
end
return at
`)
