-- Read window states. Every key is a hash {v = version, s = serialised window state};
-- ARGV[1] is a msgpack array of the keys (not passed as KEYS, see redis_windows.lua).
-- ARGV[2], optional, is a msgpack array of the versions the caller holds of the LAST
-- keys (one per key, in order): such a key's state is sent only when its version moved.
--
-- The reply is an array: first a msgpack array of the keys' versions (0 = the key does
-- not exist), then each key's state ("" when it does not exist, false when the caller
-- holds that version), in key order.
local keys = cmsgpack.unpack(ARGV[1])
local held = {}
if ARGV[2] then
  held = cmsgpack.unpack(ARGV[2])
end
local first_held = #keys - #held + 1
local versions = {}
local reply = {false}
for i = 1, #keys do
  if i >= first_held then
    local version = tonumber(redis.call('HGET', keys[i], 'v')) or 0
    versions[i] = version
    if version == held[i - first_held + 1] then
      reply[i + 1] = false
    else
      reply[i + 1] = redis.call('HGET', keys[i], 's') or ''
    end
  else
    local hash = redis.call('HMGET', keys[i], 'v', 's')
    versions[i] = tonumber(hash[1]) or 0
    reply[i + 1] = hash[2] or ''
  end
end
reply[1] = cmsgpack.pack(versions)
return reply
