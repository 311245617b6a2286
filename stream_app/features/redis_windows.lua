-- Write a batch's window states if none changed since they were read (compare-and-set).
--
-- Every key is a hash {v = version, s = serialised window state}. ARGV[1] is the TTL in
-- seconds; ARGV[2] is a msgpack array {keys, versions, sizes}: the keys a batch read, the
-- version each was read at (0 = the key did not exist) and the byte length of its new state
-- (0 = only read, unchanged); ARGV[3] is the new states concatenated in key order. The keys
-- are not passed as KEYS: a batch's keys span hash slots, so the script is for a single
-- Redis anyway, and ~4,000 KEYS cost the client more CPU to send than the whole batch else.
--
-- All versions match: every changed state is stored with version + 1, its TTL renewed,
-- and the reply is an empty array. Otherwise nothing is written and the reply lists, per
-- stale key, its index (1-based), current version and current state, so the caller can
-- redo the batch on fresh states. Atomic: Redis runs one script at a time.
local ttl = tonumber(ARGV[1])
local batch = cmsgpack.unpack(ARGV[2])
local keys, expected, sizes = batch[1], batch[2], batch[3]
local stale = {}
local versions = {}
for i = 1, #keys do
  local current = tonumber(redis.call('HGET', keys[i], 'v') or '0')
  versions[i] = current
  if current ~= expected[i] then
    stale[#stale + 1] = i
  end
end
if #stale > 0 then
  local reply = {}
  for _, i in ipairs(stale) do
    reply[#reply + 1] = i
    reply[#reply + 1] = versions[i]
    reply[#reply + 1] = redis.call('HGET', keys[i], 's') or ''
  end
  return reply
end
local states = ARGV[3]
local at = 1
for i = 1, #keys do
  local size = sizes[i]
  if size > 0 then
    local state = string.sub(states, at, at + size - 1)
    redis.call('HSET', keys[i], 'v', tostring(versions[i] + 1), 's', state)
    redis.call('EXPIRE', keys[i], ttl)
    at = at + size
  end
end
return {}
