"""The Redis store's operations as Lua scripts: each runs atomically inside Redis.

They apply `rules` to one hash per scope (ring fields ``s<i>`` slot, ``c<i>`` calls, ``r<i>``
retries, ``f<i>`` failed and ``o<i>`` successful attempts; ``trouble``, ``lastfail``, ``cool``,
``lease``, ``succ``, ``lastok``) on the server's clock (``TIME``,
so a fleet shares one clock) unless ``ARGV[1]`` gives a time. Every write refreshes the key's
TTL, so an abandoned scope expires. Times go back relative to the script's now (an age or what
is left), so each process reads them on its own clock, whatever the skew between them.
"""

from __future__ import annotations

import hashlib

from .rules import (
    IDLE_SECONDS,
    MAX_COOL_DOWN,
    MAX_DATED,
    MAX_LEASE,
    QUIET_SECONDS,
    RECOVERED_MIN,
    RECOVERED_SHARE,
    SLOT_SECONDS,
    SLOTS,
)

_PRELUDE = f"""
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local SLOTS, MAX_COOL, MAX_LEASE = {SLOTS}, {MAX_COOL_DOWN!r}, {MAX_LEASE!r}
local cur = math.floor(now / {SLOT_SECONDS!r})
local function fmt(x) return string.format('%.6f', x) end
local function field(name) return tonumber(redis.call('HGET', key, name)) end
local function touch() redis.call('PEXPIRE', key, {round(IDLE_SECONDS * 1000)}) end
-- a deadline still running and no further ahead than its bound (else the clock stepped)
local function live(deadline, longest)
  if deadline and deadline > now and deadline <= now + longest then return deadline end
  return nil
end
local function past(t) if t and t > now then return now end return t end
local function entry_at(slot)
  local i = slot % SLOTS
  if tonumber(redis.call('HGET', key, 's' .. i)) ~= slot then
    redis.call('HSET', key, 's' .. i, slot, 'c' .. i, 0, 'r' .. i, 0, 'f' .. i, 0, 'o' .. i, 0)
  end
  return i
end
local function entry() return entry_at(cur) end
-- the trouble's start, unless no attempt failed for QUIET_SECONDS (then it is over)
local function trouble_now()
  local trouble = past(field('trouble'))
  local last = past(field('lastfail'))
  if trouble and last and now - last <= {QUIET_SECONDS!r} then return trouble end
  if trouble then redis.call('HDEL', key, 'trouble') end
  return nil
end
-- Avatario answers again: enough successes in this slot and the one before, few failures
local function recovered()
  local fails, oks = 0, 0
  for i = 0, SLOTS - 1 do
    local s = tonumber(redis.call('HGET', key, 's' .. i))
    if s and s > cur - 2 and s <= cur then
      fails = fails + (tonumber(redis.call('HGET', key, 'f' .. i)) or 0)
      oks = oks + (tonumber(redis.call('HGET', key, 'o' .. i)) or 0)
    end
  end
  return oks >= {RECOVERED_MIN} and fails < {RECOVERED_SHARE!r} * (fails + oks)
end
-- a slot up to a window ahead (the clock stepped back) counts; older or further, not
local function room(share, reserve)
  if not share then return true end
  local names = {{}}
  for i = 0, SLOTS - 1 do
    names[#names + 1] = 's' .. i
    names[#names + 1] = 'c' .. i
    names[#names + 1] = 'r' .. i
  end
  local v = redis.call('HMGET', key, unpack(names))
  local calls, retries = 0, 0
  for i = 0, SLOTS - 1 do
    local s = tonumber(v[3 * i + 1])
    if s and s > cur - SLOTS and s < cur + SLOTS then
      calls = calls + (tonumber(v[3 * i + 2]) or 0)
      retries = retries + (tonumber(v[3 * i + 3]) or 0)
    end
  end
  return retries + 1 <= calls * share + reserve
end
"""

#: ARGV: now -> 1 when the scope is in trouble, else 0
DEPOSIT = """
redis.call('HINCRBY', key, 'c' .. entry(), 1)
touch()
if trouble_now() then return 1 end
return 0
"""

#: ARGV: now, retry ('1' or ''), share ('' for none), cool-down seconds from now (''), reserve,
#: seconds the failure dates back -> {allowed, refused_by, cool-down left (''), trouble's age}
FAILED = f"""
local trouble = trouble_now()
if not trouble then trouble = now end
local dated = math.min(math.max(tonumber(ARGV[6]) or 0, 0), {MAX_DATED!r})
redis.call('HINCRBY', key, 'f' .. entry_at(math.floor((now - dated) / {SLOT_SECONDS!r})), 1)
redis.call('HSET', key, 'trouble', fmt(trouble), 'lastfail', fmt(now))
local cool = live(field('cool'), MAX_COOL)
local delay = tonumber(ARGV[4])
if delay and delay > 0 then
  local asked = now + math.min(delay, MAX_COOL)
  if not cool or asked > cool then cool = asked end
end
if cool then redis.call('HSET', key, 'cool', fmt(cool)) else redis.call('HDEL', key, 'cool') end
local allowed, refused = 0, ''
if ARGV[2] == '1' then
  if cool and not (delay and delay > 0 and cool <= now + math.min(delay, MAX_COOL) + 0.001) then
    refused = 'cool_down'
  elseif not room(tonumber(ARGV[3]), tonumber(ARGV[5])) then
    refused = 'budget'
  else
    redis.call('HINCRBY', key, 'r' .. entry(), 1)
    allowed = 1
  end
end
touch()
local left = ''
if cool then left = fmt(cool - now) end
return {{allowed, refused, left, fmt(now - trouble)}}
"""

#: ARGV: now -> 1 while the scope is still in trouble after the success, else 0
SUCCEEDED = """
redis.call('HINCRBY', key, 'o' .. entry(), 1)
redis.call('HDEL', key, 'lease')
redis.call('HINCRBY', key, 'succ', 1)
redis.call('HSET', key, 'lastok', fmt(now))
local still = 0
if trouble_now() then
  if recovered() then redis.call('HDEL', key, 'trouble') else still = 1 end
end
touch()
return still
"""

#: ARGV: now -> {trouble's age (''), cool-down left (''), successes, last success's age ('')}
STATUS = """
local function age(t) if t then return fmt(now - t) end return '' end
local cool = live(field('cool'), MAX_COOL)
local left = ''
if cool then left = fmt(cool - now) end
return {age(trouble_now()), left, field('succ') or 0, age(past(field('lastok')))}
"""

#: ARGV: now, lease seconds, share ('' for none), reserve -> 1 (granted) or 0
TAKE_PROBE = """
if live(field('cool'), MAX_COOL) or live(field('lease'), MAX_LEASE) then return 0 end
if not room(tonumber(ARGV[3]), tonumber(ARGV[4])) then return 0 end
local lease = math.min(math.max(tonumber(ARGV[2]) or 0, 0), MAX_LEASE)
redis.call('HSET', key, 'lease', fmt(now + lease))
if tonumber(ARGV[3]) then redis.call('HINCRBY', key, 'r' .. entry(), 1) end
touch()
return 1
"""


class Script:
    """One operation's full Lua source and its SHA-1 (EVALSHA's name for it)."""

    def __init__(self, body: str) -> None:
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
