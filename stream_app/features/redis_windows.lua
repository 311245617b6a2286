-- Write a batch's window states if none changed since they were read (compare-and-set).
--
-- Every key is a hash {v = version, s = serialised window state}. KEYS are the states a
-- batch read; ARGV[1] is the TTL in seconds, then per key two values: the version the
-- batch read ("0" = the key did not exist) and the new state ("" = only read, unchanged).
--
-- All versions match: every changed state is stored with version + 1, its TTL renewed,
-- and the reply is an empty array. Otherwise nothing is written and the reply lists, per
-- stale key, its index (1-based), current version and current state, so the caller can
-- redo the batch on fresh states. Atomic: Redis runs one script at a time.
local ttl = tonumber(ARGV[1])
local stale = {}
local versions = {}
for i = 1, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'v') or '0'
  versions[i] = current
  if current ~= ARGV[2 * i] then
    stale[#stale + 1] = i
  end
end
if #stale > 0 then
  local reply = {}
  for _, i in ipairs(stale) do
    reply[#reply + 1] = i
    reply[#reply + 1] = versions[i]
    reply[#reply + 1] = redis.call('HGET', KEYS[i], 's') or ''
  end
  return reply
end
for i = 1, #KEYS do
  local state = ARGV[2 * i + 1]
  if state ~= '' then
    redis.call('HSET', KEYS[i], 'v', tostring(tonumber(versions[i]) + 1), 's', state)
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
return {}
