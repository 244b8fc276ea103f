// Command sessionfill writes a policy directory (the load harness's
// fixture) and a state file holding n live token sessions as the engine
// begins them (tokens without sid), for measuring what a sessiongate
// process holding them costs (BENCHMARKS.md, "A million sessions"):
//
//	go run ./test/sessionfill DIR [n]
//	GOMEMLIMIT=450MiB sessiongate serve --policies DIR/policies --state-file DIR/state
//
// The file is a snapshot in the format before headers (SGSNAP01), which
// the store loads without asking for journals. For measurements only.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sessionfill DIR [sessions (1000000)]")
		os.Exit(2)
	}
	dir, n := os.Args[1], 1_000_000
	if len(os.Args) > 2 {
		var err error
		if n, err = strconv.Atoi(os.Args[2]); err != nil {
			panic(err)
		}
	}
	pol := filepath.Join(dir, "policies")
	if err := os.MkdirAll(pol, 0o755); err != nil {
		panic(err)
	}
	if _, err := fixture.New(pol); err != nil {
		panic(err)
	}
	f, err := os.Create(filepath.Join(dir, "state"))
	if err != nil {
		panic(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	_, _ = w.WriteString("SGSNAP01") // write errors surface at Flush
	tab := crc32.MakeTable(crc32.Castagnoli)
	now := time.Now().UnixMilli()
	var payload []byte
	pair := func(k string, v []byte) {
		payload = binary.AppendUvarint(payload, uint64(len(k)))
		payload = append(payload, k...)
		payload = binary.AppendUvarint(payload, uint64(len(v)))
		payload = append(payload, v...)
	}
	flush := func() {
		var h [8]byte
		binary.BigEndian.PutUint32(h[:], uint32(len(payload)))
		binary.BigEndian.PutUint32(h[4:], crc32.Checksum(payload, tab))
		_, _ = w.Write(h[:])
		_, _ = w.Write(payload)
		payload = payload[:0]
	}
	for i := range n {
		var raw [24]byte
		_, _ = rand.Read(raw[:])
		sub := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		r := authz.Session{
			ID: base64.RawURLEncoding.EncodeToString(raw[:]), Policy: fixture.Policy, Subject: sub,
			Identity: authz.IdentityDigest(fixture.Issuer, sub, nil), Scope: authz.ScopeDigest(fixture.Issuer, sub, ""),
			SignIn: now, Created: now, LastActivity: now, KeepUntil: now + (9 * time.Hour).Milliseconds(),
			UserScope: true,
		}
		v, err := r.AppendKeyed(nil)
		if err != nil {
			panic(err)
		}
		pair("s"+r.Policy+"\x00"+r.ID, v)
		st := authz.ScopeState{Current: r.ID, KeepUntil: r.KeepUntil}
		sv, err := st.AppendBinary(nil)
		if err != nil {
			panic(err)
		}
		pair("c"+r.Policy+"\x00"+string(r.Scope[:]), sv)
		if len(payload) > 60<<10 {
			flush()
		}
	}
	if len(payload) > 0 {
		flush()
	}
	if err := w.Flush(); err != nil {
		panic(err)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
}
