-- Read window states. Every key is a hash {v = version, s = serialised window state};
-- ARGV[1] is a msgpack array of the keys (not passed as KEYS, see redis_windows.lua).
--
-- The reply is an array: first a msgpack array of the keys' versions (0 = the key does
-- not exist), then each key's state ("" when it does not exist), in key order.
local keys = cmsgpack.unpack(ARGV[1])
local versions = {}
local reply = {false}
for i = 1, #keys do
  local hash = redis.call('HMGET', keys[i], 'v', 's')
  versions[i] = tonumber(hash[1]) or 0
  reply[i + 1] = hash[2] or ''
end
reply[1] = cmsgpack.pack(versions)
return reply
