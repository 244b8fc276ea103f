package redisstore

import "github.com/redis/go-redis/v9"

// Every read-modify-write runs as one Lua script on one key, so each is
// atomic on its node and, in Cluster mode, never spans two hash slots. The
// records are authz's binary encodings (authz.Session.AppendBinary,
// authz.ScopeState.AppendBinary), patched in place at fixed offsets from
// their end, so that Redis, the near cache and the change channel all hold
// one format. Times are Unix milliseconds, exact in Lua's doubles (< 2^53).
//
// A session record ends with five big-endian int64s: SignIn, Created,
// LastActivity, EndedAt, KeepUntil (bytes n-39 … n, Lua counts from 1); its
// second byte is the end cause. A scope record is 0x02, a 2-byte length, the
// current session id, EndedAt and KeepUntil.
//
// Scripts that change what other replicas may hold in their near cache
// publish the new record on the change channel, inside the script, so that a
// change is published if and only if it is written. A message is a 2-byte
// key length, the key, and the record.
const luaPrelude = `
local function u64(s, i)
  local v = 0
  for j = i, i + 7 do v = v * 256 + string.byte(s, j) end
  return v
end
local function p64(v)
  local b = {}
  for j = 8, 1, -1 do b[j] = v % 256; v = math.floor(v / 256) end
  return string.char(unpack(b))
end
local function ms(v) return string.format('%.0f', v) end
local function msg(k, r)
  return string.char(math.floor(string.len(k) / 256), string.len(k) % 256) .. k .. r
end
local function badSession(r)
  return string.len(r) < 80 or string.byte(r, 1) ~= 1
end
`

// touchScript advances a live session: KEYS[1] the session; ARGV last
// activity, sign-in, keep-until (0: unchanged). Each only grows. An ended
// session is returned unchanged: S3, nothing revives it. It publishes
// nothing: other replicas confirm activity against Redis before they deny
// for inactivity, and their near caches are fresh enough for the rest.
var touchScript = redis.NewScript(luaPrelude + `
local r = redis.call('GET', KEYS[1])
if not r then return false end
if badSession(r) then return redis.error_reply('ERR sessiongate: corrupt session record') end
local n = string.len(r)
if u64(r, n - 15) ~= 0 then return r end
local si, la, ku = u64(r, n - 39), u64(r, n - 23), u64(r, n - 7)
local nla = math.max(la, tonumber(ARGV[1]))
local nsi = math.max(si, tonumber(ARGV[2]))
local nku = math.max(ku, tonumber(ARGV[3]))
if nla == la and nsi == si and nku == ku then return r end
r = string.sub(r, 1, n - 40) .. p64(nsi) .. string.sub(r, n - 31, n - 24) .. p64(nla) .. string.sub(r, n - 15, n - 8) .. p64(nku)
redis.call('SET', KEYS[1], r, 'PXAT', ms(nku))
return r
`)

// endScript ends a live session: KEYS[1] the session; ARGV ended-at, cause,
// keep-until, channel. It returns {1, record} for the call that ended it,
// {0, record} if it had already ended, {0} if it is unknown.
var endScript = redis.NewScript(luaPrelude + `
local r = redis.call('GET', KEYS[1])
if not r then return {0} end
if badSession(r) then return redis.error_reply('ERR sessiongate: corrupt session record') end
local n = string.len(r)
if u64(r, n - 15) ~= 0 then return {0, r} end
local ku = math.max(u64(r, n - 7), tonumber(ARGV[3]))
r = string.sub(r, 1, 1) .. string.char(tonumber(ARGV[2])) .. string.sub(r, 3, n - 16) .. p64(tonumber(ARGV[1])) .. p64(ku)
redis.call('SET', KEYS[1], r, 'PXAT', ms(ku))
redis.call('PUBLISH', ARGV[4], msg(KEYS[1], r))
return {1, r}
`)

// scopeScript updates an S3 scope: KEYS[1] the scope; ARGV ended-at (0:
// unchanged), keep-until, current session id ("": unchanged), channel.
// EndedAt and KeepUntil only grow. It returns the record as stored.
var scopeScript = redis.NewScript(luaPrelude + `
local r = redis.call('GET', KEYS[1])
local cur, ea, ku = '', 0, 0
if r then
  local n = string.len(r)
  local l = -1
  if n >= 3 then l = string.byte(r, 2) * 256 + string.byte(r, 3) end
  if string.byte(r, 1) ~= 2 or n ~= 3 + l + 16 then
    return redis.error_reply('ERR sessiongate: corrupt scope record')
  end
  cur, ea, ku = string.sub(r, 4, 3 + l), u64(r, 4 + l), u64(r, 12 + l)
end
local nea = math.max(ea, tonumber(ARGV[1]))
local nku = math.max(ku, tonumber(ARGV[2]))
local ncur = ARGV[3]
if ncur == '' then ncur = cur end
if r and nea == ea and nku == ku and ncur == cur then return r end
local l = string.len(ncur)
r = string.char(2, math.floor(l / 256), l % 256) .. ncur .. p64(nea) .. p64(nku)
redis.call('SET', KEYS[1], r, 'PXAT', ms(nku))
redis.call('PUBLISH', ARGV[4], msg(KEYS[1], r))
return r
`)
