package redis

import (
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
)

// Every read-modify-write runs as one Lua script on one key, so each is
// atomic on its node and, in Cluster mode, never spans two hash slots. The
// records are authz's binary encodings (authz.Session.AppendBinary,
// authz.ScopeState.AppendBinary), patched in place, so that Redis, the near
// cache and the change channel all hold one format. Times are Unix
// milliseconds, exact in Lua's doubles (< 2^53).
//
// The scripts apply the rules of authz.Session.Advance and EndWith and of
// authz.ScopeState.Raise, in Lua; TestScriptsFollowTheRules checks them
// against the Go rules on a real Redis. The offsets are not written here:
// they are generated into the script text from authz's layout constants
// (authz.SessionOff*), so a new record format cannot leave them behind. A
// session record of an older format is rewritten in the current one by Go
// (upgrade) when a script refuses it, and the script runs again.
//
// Scripts that change what other replicas may hold in their near cache
// publish the new record on the change channel, inside the script, so that a
// change is published if and only if it is written. A message is a 2-byte
// key length, the key, and the record.

// Errors the scripts return, after Redis' "ERR " and errPrefix.
const (
	errPrefix    = "sessiongate: "
	errCorrupt   = "corrupt record"
	errOldFormat = "older record format"
)

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
local function put64(s, i, v) return string.sub(s, 1, i - 1) .. p64(v) .. string.sub(s, i + 8) end
local function ms(v) return string.format('%.0f', v) end
local function msg(k, r)
  return string.char(math.floor(string.len(k) / 256), string.len(k) % 256) .. k .. r
end
local function fail(what) return redis.error_reply('ERR {{errPrefix}}' .. what) end
-- grantPos is the index of a current-format session record's grant length
-- (after ID, Policy and Subject), or nil when the record is malformed.
local function grantPos(r)
  local n = string.len(r)
  if string.byte(r, 1) ~= {{format}} or n < {{fixed}} + 10 then return nil end
  local p = {{fixed}} + 1
  for _ = 1, 3 do
    if p + 1 > n then return nil end
    p = p + 2 + string.byte(r, p) * 256 + string.byte(r, p + 1)
  end
  if p + 3 > n or n - p - 3 ~= u64(string.rep('\0', 4) .. string.sub(r, p, p + 3), 1) then return nil end
  return p
end
local olderFormats = {{older}}
-- checkSession returns nil for a current-format session record, else the
-- error to answer.
local function checkSession(r)
  if string.byte(r, 1) == {{format}} and grantPos(r) then return nil end
  if olderFormats[string.byte(r, 1)] then return fail('{{errOldFormat}}') end
  return fail('{{errCorrupt}}')
end
`

// luaScript fills the layout of the current session format into src.
func luaScript(src string) *redis.Script {
	lua := func(off int) string { return strconv.Itoa(off + 1) } // Lua counts from 1
	r := strings.NewReplacer(
		"{{errPrefix}}", errPrefix, "{{errCorrupt}}", errCorrupt, "{{errOldFormat}}", errOldFormat,
		"{{format}}", strconv.Itoa(authz.SessionFormat),
		"{{scopeFormat}}", strconv.Itoa(authz.ScopeFormat),
		"{{older}}", olderFormats(),
		"{{fixed}}", strconv.Itoa(authz.SessionFixedLen),
		"{{cause}}", lua(authz.SessionOffCause),
		"{{signIn}}", lua(authz.SessionOffSignIn),
		"{{lastActivity}}", lua(authz.SessionOffLastActivity),
		"{{endedAt}}", lua(authz.SessionOffEndedAt),
		"{{keepUntil}}", lua(authz.SessionOffKeepUntil),
		"{{grantAt}}", lua(authz.SessionOffGrantAt),
	)
	return redis.NewScript(r.Replace(luaPrelude + src))
}

// olderFormats is a Lua table literal of the session formats before the
// current one, which the scripts hand back to Go to upgrade.
func olderFormats() string {
	var b strings.Builder
	b.WriteString("{")
	for f := 1; f < authz.SessionFormat; f++ {
		if authz.KindOf([]byte{byte(f)}) == authz.KindSession {
			b.WriteString("[" + strconv.Itoa(f) + "]=true,")
		}
	}
	b.WriteString("}")
	return b.String()
}

// touchScript advances a live session (authz.Session.Advance): KEYS[1] the
// session; ARGV last activity, sign-in, keep-until (0: unchanged), grant-at,
// grant ("": unchanged), channel. The times only grow; the grant is replaced
// only by a newer one. An ended session is returned unchanged: S3, nothing
// revives it. It publishes only a new grant: other replicas confirm activity
// against Redis before they deny for inactivity, and their near caches are
// fresh enough for the rest; a refreshed grant must reach them.
var touchScript = luaScript(`
local r = redis.call('GET', KEYS[1])
if not r then return false end
local bad = checkSession(r)
if bad then return bad end
if u64(r, {{endedAt}}) ~= 0 then return r end
local si, la, ku, ga = u64(r, {{signIn}}), u64(r, {{lastActivity}}), u64(r, {{keepUntil}}), u64(r, {{grantAt}})
local nla = math.max(la, tonumber(ARGV[1]))
local nsi = math.max(si, tonumber(ARGV[2]))
local nku = math.max(ku, tonumber(ARGV[3]))
local regrant = ARGV[5] ~= '' and tonumber(ARGV[4]) > ga
if nla == la and nsi == si and nku == ku and not regrant then return r end
r = put64(put64(put64(r, {{signIn}}, nsi), {{lastActivity}}, nla), {{keepUntil}}, nku)
if regrant then
  local p = grantPos(r)
  local l = string.len(ARGV[5])
  r = put64(string.sub(r, 1, p - 1), {{grantAt}}, tonumber(ARGV[4])) .. string.sub(p64(l), 5, 8) .. ARGV[5]
end
redis.call('SET', KEYS[1], r, 'PXAT', ms(nku))
if regrant then redis.call('PUBLISH', ARGV[6], msg(KEYS[1], r)) end
return r
`)

// endScript ends a live session (authz.Session.EndWith) and drops its
// grant: KEYS[1] the session; ARGV ended-at, cause, keep-until, channel. It
// returns {1, record} for the call that ended it, {0, record} if it had
// already ended, {0} if it is unknown.
var endScript = luaScript(`
local r = redis.call('GET', KEYS[1])
if not r then return {0} end
local bad = checkSession(r)
if bad then return bad end
if u64(r, {{endedAt}}) ~= 0 then return {0, r} end
local ku = math.max(u64(r, {{keepUntil}}), tonumber(ARGV[3]))
r = string.sub(r, 1, grantPos(r) - 1) .. string.rep('\0', 4)
r = string.sub(r, 1, {{cause}} - 1) .. string.char(tonumber(ARGV[2])) .. string.sub(r, {{cause}} + 1)
r = put64(put64(r, {{endedAt}}, tonumber(ARGV[1])), {{keepUntil}}, ku)
redis.call('SET', KEYS[1], r, 'PXAT', ms(ku))
redis.call('PUBLISH', ARGV[4], msg(KEYS[1], r))
return {1, r}
`)

// scopeScript updates an S3 scope (authz.ScopeState.Raise and Begin):
// KEYS[1] the scope; ARGV ended-at (0: unchanged), keep-until, current
// session id ("": unchanged), channel. EndedAt and KeepUntil only grow. It
// returns the record as stored. (The scope format is a format byte, the
// current id with a 2-byte length, EndedAt and KeepUntil; a new scope format
// changes this script too.)
var scopeScript = luaScript(`
local r = redis.call('GET', KEYS[1])
local cur, ea, ku = '', 0, 0
if r then
  local n = string.len(r)
  local l = -1
  if n >= 3 then l = string.byte(r, 2) * 256 + string.byte(r, 3) end
  if string.byte(r, 1) ~= {{scopeFormat}} or n ~= 3 + l + 16 then return fail('{{errCorrupt}}') end
  cur, ea, ku = string.sub(r, 4, 3 + l), u64(r, 4 + l), u64(r, 12 + l)
end
local nea = math.max(ea, tonumber(ARGV[1]))
local nku = math.max(ku, tonumber(ARGV[2]))
local ncur = ARGV[3]
if ncur == '' then ncur = cur end
if r and nea == ea and nku == ku and ncur == cur then return r end
local l = string.len(ncur)
r = string.char({{scopeFormat}}, math.floor(l / 256), l % 256) .. ncur .. p64(nea) .. p64(nku)
redis.call('SET', KEYS[1], r, 'PXAT', ms(nku))
redis.call('PUBLISH', ARGV[4], msg(KEYS[1], r))
return r
`)
