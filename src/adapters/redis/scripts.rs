//! The Lua scripts of the Redis backend, one per operation. `ARGV[1]` is always the key
//! prefix (`{namespace}:`); `KEYS[1]` is the ready list, which routes the call to the node owning
//! the namespace's slot.

use fred::types::scripts::Script;
use std::sync::LazyLock;

/// Shared by every script: the server's time in ms, and burying a message.
const PRELUDE: &str = r#"
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function bury(id, reason)
  local m = p .. 'm:' .. id
  local body = redis.call('HGET', m, 'body')
  if not body then return 0 end
  local deliveries = redis.call('HGET', m, 'deliveries') or '0'
  local owner = redis.call('HGET', m, 'owner')
  if owner then
    redis.call('SREM', p .. 'owned:' .. owner, id)
    redis.call('ZREM', p .. 'leased', id)
  elseif redis.call('ZREM', p .. 'delayed', id) == 0 then
    -- Only a message waiting in the ready list is in it: LREM walks the list, so it is left
    -- out for the leased and the delayed (every burial of a failed delivery), which keeps
    -- those O(log n) in the backlog.
    redis.call('LREM', p .. 'ready', 1, id)
  end
  redis.call('DEL', m)
  redis.call('HSET', p .. 'd:' .. id, 'body', body, 'reason', reason, 'at', now,
    'deliveries', deliveries)
  redis.call('LPUSH', p .. 'dead', id)
  return 1
end
local function unlease(id)
  local m = p .. 'm:' .. id
  local owner = redis.call('HGET', m, 'owner')
  if owner then redis.call('SREM', p .. 'owned:' .. owner, id) end
  redis.call('HDEL', m, 'owner')
  redis.call('ZREM', p .. 'leased', id)
end
-- A failed delivery: counted; buried at the limit, else due again after `delay` ms.
local function failed(id, delay, reason, limit)
  local m = p .. 'm:' .. id
  if redis.call('EXISTS', m) == 0 then return 0 end
  unlease(id)
  local failures = redis.call('HINCRBY', m, 'failures', 1)
  redis.call('HSET', m, 'last_error', reason)
  if failures >= limit then return bury(id, reason) end
  redis.call('ZADD', p .. 'delayed', now + delay, id)
  return 0
end
"#;

fn script(body: &str) -> Script {
    Script::from_lua(format!("{PRELUDE}{body}"))
}

/// ARGV: id, body, due_ms. A message already queued, leased or dead-lettered is left as is.
pub(super) static PUSH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
if redis.call('EXISTS', p .. 'm:' .. id) == 1 or redis.call('EXISTS', p .. 'd:' .. id) == 1 then
  return 0
end
redis.call('HSET', p .. 'm:' .. id, 'body', ARGV[3], 'deliveries', 0, 'failures', 0)
local due = tonumber(ARGV[4])
if due <= now then
  redis.call('RPUSH', p .. 'ready', id)
else
  redis.call('ZADD', p .. 'delayed', due, id)
end
return 1
"#,
    )
});

/// ARGV: consumer, max, lease_ms, failure limit. Expired leases are failed deliveries; due
/// delayed messages join the ready list in due order; then up to `max` are leased, FIFO.
/// Returns id, body, deliveries for each.
pub(super) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local consumer, max, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', p .. 'leased', '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  failed(id, 0, 'its lease expired: the node running it stopped answering', limit)
end
local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'delayed', id)
  redis.call('RPUSH', p .. 'ready', id)
end
local out = {}
local taken = 0
while taken < max do
  local id = redis.call('LPOP', p .. 'ready')
  if not id then break end
  local m = p .. 'm:' .. id
  local body = redis.call('HGET', m, 'body')
  if body and not redis.call('HGET', m, 'owner') then
    local deliveries = redis.call('HINCRBY', m, 'deliveries', 1)
    redis.call('HSET', m, 'owner', consumer)
    redis.call('ZADD', p .. 'leased', now + lease, id)
    redis.call('SADD', p .. 'owned:' .. consumer, id)
    out[#out + 1] = id
    out[#out + 1] = body
    out[#out + 1] = tostring(deliveries)
    taken = taken + 1
  end
end
return out
"#,
    )
});

/// ARGV: consumer, lease_ms, ids…: extends the consumer's leases and the ids' slots. Returns
/// the ids the consumer no longer holds (acknowledged, expired and taken back, leased by another).
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local consumer, lease = ARGV[2], tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', p .. 'm:' .. id, 'owner') == consumer then
    redis.call('ZADD', p .. 'leased', 'XX', now + lease, id)
  else
    lost[#lost + 1] = id
  end
  local held = p .. 'held:' .. id
  for _, pool in ipairs(redis.call('SMEMBERS', held)) do
    redis.call('ZADD', p .. 'slots:' .. pool, 'XX', now + lease, id)
  end
  if redis.call('EXISTS', held) == 1 then redis.call('PEXPIRE', held, lease * 2) end
end
return lost
"#,
    )
});

/// ARGV: id.
pub(super) static ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
unlease(id)
redis.call('ZREM', p .. 'delayed', id)
redis.call('DEL', p .. 'm:' .. id)
return 1
"#,
    )
});

/// ARGV: id, delay_ms.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
if redis.call('EXISTS', p .. 'm:' .. id) == 0 then return 0 end
unlease(id)
redis.call('ZADD', p .. 'delayed', now + tonumber(ARGV[3]), id)
return 1
"#,
    )
});

/// ARGV: id, delay_ms, reason, failure limit. 1 when buried.
pub(super) static FAIL: LazyLock<Script> = LazyLock::new(|| {
    script(r#"return failed(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))"#)
});

/// ARGV: id, reason.
pub(super) static DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| script(r#"return bury(ARGV[2], ARGV[3])"#));

/// ARGV: limit. id, body, reason, at, deliveries of the newest dead letters.
pub(super) static DEAD_LETTERS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for _, id in ipairs(redis.call('LRANGE', p .. 'dead', 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', p .. 'd:' .. id, 'body', 'reason', 'at', 'deliveries')
  out[#out + 1] = id
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or ''
  out[#out + 1] = f[3] or '0'
  out[#out + 1] = f[4] or '0'
end
return out
"#,
    )
});

/// ARGV: after, limit. The dead list grows at its head and loses only its oldest letters at
/// its tail (retention, counted in `dead_removed`), so a position counted from the first letter
/// ever buried (1) plus those removed stays the same letter: the position of the last letter
/// sent (`after` when none), then up to `limit` letters after position `after`, oldest first,
/// as id, body, reason, at, deliveries each. LRANGE near the head costs the distance from the
/// head: the letters buried since the last page.
pub(super) static DEAD_LETTERS_AFTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local after, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = tonumber(redis.call('GET', p .. 'dead_removed') or '0')
local from = math.max(after - removed, 0)
local length = redis.call('LLEN', p .. 'dead')
local stop = length - from - 1
if stop < 0 or limit < 1 then return {tostring(after)} end
local start = math.max(stop - limit + 1, 0)
local ids = redis.call('LRANGE', p .. 'dead', start, stop)
local out = {tostring(removed + from + #ids)}
for i = #ids, 1, -1 do
  local id = ids[i]
  local f = redis.call('HMGET', p .. 'd:' .. id, 'body', 'reason', 'at', 'deliveries')
  out[#out + 1] = id
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or ''
  out[#out + 1] = f[3] or '0'
  out[#out + 1] = f[4] or '0'
end
return out
"#,
    )
});

/// ARGV: before (ms), limit. Removes up to `limit` of the oldest dead letters buried before
/// `before`, from the tail of the dead list, counting them in `dead_removed`.
pub(super) static REMOVE_DEAD_LETTERS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local before, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = 0
while removed < limit do
  local id = redis.call('LINDEX', p .. 'dead', -1)
  if not id then break end
  local at = tonumber(redis.call('HGET', p .. 'd:' .. id, 'at') or '0')
  if at >= before then break end
  redis.call('RPOP', p .. 'dead')
  redis.call('DEL', p .. 'd:' .. id)
  removed = removed + 1
end
if removed > 0 then redis.call('INCRBY', p .. 'dead_removed', removed) end
return removed
"#,
    )
});

/// ARGV: consumer, failed (1/0), failure limit. Its leased messages go back to the front
/// of the ready list (they were due before everything there), counted as failures when
/// `failed`.
pub(super) static RELEASE_ALL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local consumer, limit = ARGV[2], tonumber(ARGV[4])
local ids = redis.call('SMEMBERS', p .. 'owned:' .. consumer)
local released = 0
for _, id in ipairs(ids) do
  local m = p .. 'm:' .. id
  if redis.call('HGET', m, 'owner') == consumer then
    released = released + 1
    if ARGV[3] == '1' then
      if failed(id, 0, 'the node running it restarted before it finished', limit) == 0 then
        redis.call('ZREM', p .. 'delayed', id)
        redis.call('LPUSH', p .. 'ready', id)
      end
    else
      unlease(id)
      redis.call('LPUSH', p .. 'ready', id)
    end
  end
end
redis.call('DEL', p .. 'owned:' .. consumer)
return released
"#,
    )
});

/// ready, delayed, leased, dead.
pub(super) static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local due = redis.call('ZCOUNT', p .. 'delayed', '-inf', now)
return {
  tostring(redis.call('LLEN', p .. 'ready') + due),
  tostring(redis.call('ZCARD', p .. 'delayed') - due),
  tostring(redis.call('ZCARD', p .. 'leased')),
  tostring(redis.call('LLEN', p .. 'dead')),
}
"#,
    )
});

/// ARGV: holder, lease_ms, pool, limit, pool, limit… All or none; 1 when held.
///
/// First come, first served across every node sharing the pools: a holder refused a pool is
/// registered as waiting for it (`waiting:{pool}`, scored by its first refused attempt; a
/// holder keeps its place when its message moves to another node, since the holder is the
/// message id), and a free slot goes to a newer holder only when more are free than live
/// waiters ahead of it. A waiter is live while it asks again (every gate tick, `waiting-seen`)
/// within [`WAITER_STALE_MS`]; gone ones are dropped as they are met. A holder is registered
/// only with the pools that refuse it, so one blocked on its task's `maxConcurrent` never
/// holds back others on the farm.
pub(super) static ACQUIRE_SLOTS: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r#"
local holder, lease = ARGV[2], tonumber(ARGV[3])
local stale = {WAITER_STALE_MS}
local seen = p .. 'waiting-seen'
local blocked, free_of = {{}}, {{}}
for i = 4, #ARGV, 2 do
  local pool = ARGV[i]
  local key = p .. 'slots:' .. pool
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  if not redis.call('ZSCORE', key, holder) then
    local free = tonumber(ARGV[i + 1]) - redis.call('ZCARD', key)
    if free <= 0 then
      blocked[#blocked + 1] = pool
    else
      local waiting = p .. 'waiting:' .. pool
      local since = tonumber(redis.call('ZSCORE', waiting, holder) or now)
      local ahead = 0
      -- Ahead: registered earlier, or in the same ms with a smaller id (a strict order).
      local others = redis.call('ZRANGEBYSCORE', waiting, '-inf', since, 'WITHSCORES',
          'LIMIT', 0, free + 64)
      for j = 1, #others, 2 do
        local other, score = others[j], tonumber(others[j + 1])
        if other ~= holder and (score < since or other < holder) then
          local last = tonumber(redis.call('HGET', seen, other) or '0')
          if now - last < stale then
            ahead = ahead + 1
            if ahead >= free then break end
          else
            redis.call('ZREM', waiting, other)
          end
        end
      end
      if ahead >= free then blocked[#blocked + 1] = pool else free_of[#free_of + 1] = pool end
    end
  end
end
if #blocked > 0 then
  for _, pool in ipairs(blocked) do
    redis.call('ZADD', p .. 'waiting:' .. pool, 'NX', now, holder)
  end
  for _, pool in ipairs(free_of) do
    redis.call('ZREM', p .. 'waiting:' .. pool, holder)
  end
  redis.call('HSET', seen, holder, now)
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('ZREM', p .. 'waiting:' .. ARGV[i], holder)
end
redis.call('HDEL', seen, holder)
local held = p .. 'held:' .. holder
for i = 4, #ARGV, 2 do
  redis.call('ZADD', p .. 'slots:' .. ARGV[i], now + lease, holder)
  redis.call('SADD', p .. 'pools', ARGV[i])
  redis.call('SADD', held, ARGV[i])
end
if #ARGV >= 4 then redis.call('PEXPIRE', held, lease * 2) end
return 1
"#
    ))
});

/// How long a waiter for slots counts without asking again: gates ask every second.
pub(super) const WAITER_STALE_MS: u64 = 5_000;

/// ARGV: holder.
pub(super) static RELEASE_SLOTS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local held = p .. 'held:' .. ARGV[2]
for _, pool in ipairs(redis.call('SMEMBERS', held)) do
  redis.call('ZREM', p .. 'slots:' .. pool, ARGV[2])
end
redis.call('DEL', held)
-- A holder given up stops waiting too: its entries are dropped when next met.
redis.call('HDEL', p .. 'waiting-seen', ARGV[2])
return 1
"#,
    )
});

/// pool, count pairs of the slots held now.
pub(super) static SLOTS_IN_USE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for _, pool in ipairs(redis.call('SMEMBERS', p .. 'pools')) do
  local key = p .. 'slots:' .. pool
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  local used = redis.call('ZCARD', key)
  if used == 0 then
    redis.call('SREM', p .. 'pools', pool)
  else
    out[#out + 1] = pool
    out[#out + 1] = tostring(used)
  end
end
return out
"#,
    )
});

/// ARGV: add|remove, host.
pub(super) static BLACKLIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if ARGV[2] == 'add' then
  return redis.call('SADD', p .. 'blacklist', ARGV[3])
end
return redis.call('SREM', p .. 'blacklist', ARGV[3])
"#,
    )
});

/// ARGV: a candidate deployment id. The first node to ask sets it; every node gets the stored
/// one, so nodes sharing this queue label their containers alike without configuration.
pub(super) static DEPLOYMENT_ID: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
redis.call('SET', p .. 'deployment-id', ARGV[2], 'NX')
return redis.call('GET', p .. 'deployment-id')
"#,
    )
});

pub(super) static BLACKLISTED: LazyLock<Script> =
    LazyLock::new(|| script(r#"return redis.call('SMEMBERS', p .. 'blacklist')"#));

/// Deletes every key of the namespace (for tests). Keys are found with SCAN on the node
/// that owns the slot.
pub(super) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cursor = '0'
local deleted = 0
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', p .. '*', 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    redis.call('DEL', key)
    deleted = deleted + 1
  end
until cursor == '0'
return deleted
"#,
    )
});
