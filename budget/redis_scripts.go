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
// its first waiter and the instant it will ask again.

// acquireScript checks every window and the pause and takes a call in one
// step.
//
// KEYS: calls, pause, waiting. ARGV: replica id, priority, call id, lease,
// hold (how long past its due instant a registered waiter holds back lower
// priorities), settle (how long after that instant, or after now if it has
// passed, a caller held back asks again), a pause to apply first (0: none),
// how long the calls key is kept, the number of windows, then each
// window's length and calls.
//
// It returns {1, now, 0} for a grant, or {0, now, wait}: the instant a call
// of this priority may be granted, exactly when it depends on ended calls
// and the pause, and otherwise the earliest it could be (a running call
// counted as ending now); for a caller held back by a higher waiter of
// another replica, at least settle after that waiter's due instant.
var acquireScript = redis.NewScript(`
local function fmt(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local calls, pausek, waitk = KEYS[1], KEYS[2], KEYS[3]
local rid, prio, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local lease, hold, settle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local pausefor, keep = tonumber(ARGV[7]), tonumber(ARGV[8])
local n = tonumber(ARGV[9])
local function window(i) return tonumber(ARGV[10 + 2 * i]), tonumber(ARGV[11 + 2 * i]) end

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
for i = 0, n - 1 do
  local per, limit = window(i)
  local from = '(' .. fmt(now - per)
  local excess = redis.call('ZCOUNT', calls, from, '+inf') - limit + 1
  if excess > 0 then
    local e = redis.call('ZRANGEBYSCORE', calls, from, '+inf', 'WITHSCORES', 'LIMIT', excess - 1, 1)
    local at = math.min(tonumber(e[2]), now)
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
