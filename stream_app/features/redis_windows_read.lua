-- Read window states. Every key is a hash {v = version, s = serialised window state};
-- ARGV[1] is a msgpack array of the keys (not passed as KEYS, see redis_windows.lua).
-- ARGV[2], optional, is a msgpack array of the versions the caller holds of the LAST
-- keys (one per key, in order): such a key's state is sent only when its version moved.
--
-- The reply is an array: first a msgpack array of the keys' versions (0 = the key does
-- not exist), then each key's state ("" when it does not exist, false when the caller
-- holds that version), in key order.
local keys = cmsgpack.unpack(ARGV[1])
local held = ARGV[2] and cmsgpack.unpack(ARGV[2]) or {}
local first_held = #keys - #held
local versions = {}
local reply = {false}
for i = 1, #keys do
  local hash = redis.call('HMGET', keys[i], 'v', 's')
  versions[i] = tonumber(hash[1]) or 0
  if i > first_held and versions[i] == held[i - first_held] then
    reply[i + 1] = false
  else
    reply[i + 1] = hash[2] or ''
  end
end
reply[1] = cmsgpack.pack(versions)
return reply
