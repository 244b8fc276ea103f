package memory

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/filelock"
)

// The state file keeps the embedded store across restarts (Options.StateFile).
//
// Files, all beside PATH:
//
//	PATH             snapshot: every record, written atomically (temp, fsync,
//	                 rename, fsync of the directory) at Close, after a start
//	                 that replayed journals, when the journal passes
//	                 JournalLimit, and every SnapshotInterval
//	PATH.journal.N   journals, N increasing: every End, appended and fsynced
//	                 before End returns, so that an end that was answered
//	                 survives kill -9 and power loss
//	PATH.lock        flock, so that two processes never share the files
//	PATH.tmp         a snapshot being written
//
// Each file is an 8-byte magic, a header, and frames: a big-endian uint32
// payload length, the CRC-32C of the payload, and the payload, which is a
// sequence of (uvarint key length, key, uvarint value length, value) pairs
// holding the store's own keys and the authz record encodings. A journal
// frame is one End (its session and scope records), so that a torn write
// loses a whole End, never half of one, or the activity of the last
// ActivityInterval (the records that Begin and Touch changed).
//
// Damage a crash cannot leave is found at load, and stops the start:
//   - A journal is created with its magic and header in a temporary file
//     that is renamed into place: a journal without them was emptied or cut.
//   - A journal is created at its full length (JournalLimit, at least 1 MiB;
//     sparse, zeros) which its header records, and written in place: frames
//     end where zeros begin, a crash leaves at most a torn frame before the
//     zeros, and a journal shorter than its header says was cut.
//   - A journal's header names the journal before it, with the length and
//     CRC-32C of that one's frames: a journal cut short, changed or deleted
//     after its successor began is found.
//   - PATH.lock holds the number of the newest journal, written when it is
//     created: a newest journal deleted is found.
//   - The snapshot's header names the first journal it does not cover, which
//     is created before the snapshot is written and never deleted while
//     current (even empty): a missing journal is found.
//   - PATH.lock is created at the first start and never deleted: a snapshot
//     and journals that are all gone beside it are found.
//
// What stays undetectable: frames of the newest journal overwritten with
// zeros from a frame on (what an unwritten journal holds), and the whole set
// of files, lock included, removed (a first start).
//
// Loading merges records instead of overwriting them: an ended session stays
// ended, live sessions keep the latest activity, scope ends only rise. The
// merge does not depend on order, so a record in both the snapshot and a
// journal (a crash between writing the snapshot and deleting the journals)
// is harmless, and compaction never has to stop Ends: it switches to a new
// journal first, snapshots the memory (which already holds every End of the
// old journals), and then deletes the old journals.
//
// Begin and Touch are journaled coarsely: the records they changed are
// written every ActivityInterval (1s) in one frame and one fsync, so a crash
// loses at most that much activity and so many new sessions; an idle timeout
// after a crash is never decided on activity older than that.

const (
	snapshotMagic = "SGSNAP02"
	journalMagic  = "SGJRNL02"
	// The formats before the headers: read (without the checks the headers
	// allow), never written.
	snapshotMagicV1 = "SGSNAP01"
	journalMagicV1  = "SGJRNL01"
	// snapshotHeader is the first journal the snapshot does not cover
	// (uint64) and the CRC-32C of those 8 bytes.
	snapshotHeader = 12
	// journalHeader is the previous journal's number and data length
	// (uint64 each) and CRC-32C, this journal's created length (uint64),
	// and the CRC-32C of those 28 bytes.
	journalHeader = 32
	// minJournalLength is the least length a journal is created with.
	minJournalLength = 1 << 20
	frameHeader      = 8
	// maxFrame bounds a frame's declared length on reading: a larger one is
	// damage, not data (writers stay far below it).
	maxFrame = 64 << 20
	// snapshotFrame is the payload size at which a snapshot frame is closed.
	snapshotFrame = 64 << 10
	// maxBatch bounds how many Ends share one write and one fsync.
	maxBatch = 256
	// retryMin and retryMax bound the backoff of failed compactions.
	retryMin, retryMax = time.Second, time.Minute
)

// crc is the CRC-32C of p (MakeTable returns the standard library's one
// table for Castagnoli).
func crc(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// file is what the state file needs of an open file; tests inject failures.
type file interface {
	io.Writer
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

type openFunc func(name string, flag int, perm os.FileMode) (file, error)

func osOpen(name string, flag int, perm os.FileMode) (file, error) {
	return os.OpenFile(name, flag, perm)
}

// state persists one Store. Ends go through the journal writer goroutine;
// snapshots are written by the compaction goroutine and by close.
type state struct {
	s        *Store
	path     string
	open     openFunc
	log      *slog.Logger
	limit    int64         // journal size that triggers a compaction
	interval time.Duration // snapshot period; none if not positive
	unlock   func()

	reqs    chan journalReq
	rotate  chan chan rotation
	compact chan struct{} // capacity 1: a pending compaction request
	stop    chan struct{} // closes the compaction loop
	loopEnd chan struct{}
	wstop   chan struct{} // closes the journal writer
	wEnd    chan struct{}

	compactMu sync.Mutex // one compaction at a time

	// fault says why the files cannot be written (nil while they can): set
	// by a failed append or compaction, cleared by a compaction that
	// succeeds. The store is not ready meanwhile (Store.Ready).
	fault atomic.Pointer[error]

	// activity holds the keys whose records Begin and Touch changed since
	// the last activity frame.
	activityMu sync.Mutex
	activity   map[string]struct{}
	actEvery   time.Duration // ActivityInterval; none if not positive

	// Owned by the writer goroutine.
	f      file
	n      uint64 // number of the journal f
	size   int64  // where its frames end: the next write's offset
	sum    uint32 // CRC-32C of everything before size
	broken error  // set after a failed write or fsync: f is not trusted
}

// journalEnding is how a journal ended, as its successor's header records
// it.
type journalEnding struct {
	n    uint64
	size int64  // where its frames end
	sum  uint32 // CRC-32C of everything before size
}

type journalReq struct {
	frame []byte
	done  chan error
}

type rotation struct {
	n   uint64 // the new journal's number: older ones are obsolete once snapshotted
	err error
}

func (s *Store) openState(o Options) (*state, error) {
	st := &state{
		s: s, path: o.StateFile, open: o.openFile, log: o.Logger,
		limit: o.JournalLimit, interval: o.SnapshotInterval, actEvery: o.ActivityInterval, activity: map[string]struct{}{},
		reqs: make(chan journalReq), rotate: make(chan chan rotation), compact: make(chan struct{}, 1),
		stop: make(chan struct{}), loopEnd: make(chan struct{}), wstop: make(chan struct{}), wEnd: make(chan struct{}),
	}
	if st.open == nil {
		st.open = osOpen
	}
	_, err := os.Stat(st.path + ".lock")
	used := err == nil // the lock outlives every start: the files were in use
	unlock, err := filelock.Lock(st.path + ".lock")
	if err != nil {
		return nil, st.errorf("%v", err)
	}
	st.unlock = unlock
	last, replayed, err := st.load(used)
	if err == nil {
		err = st.startJournal(last)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	go st.writer()
	go st.loop()
	if replayed {
		st.kick() // fold the journals into a snapshot
	}
	return st, nil
}

func (st *state) errorf(format string, args ...any) error {
	return fmt.Errorf("memory store: state file %s: %s", st.path, fmt.Sprintf(format, args...))
}

// load restores the snapshot and every journal into the store, checking
// that none is missing, cut or changed (see the top of this file), and
// returns how the last journal ended and whether any journal held records.
func (st *state) load(used bool) (last journalEnding, replayed bool, err error) {
	_ = os.Remove(st.path + ".tmp") // a snapshot that never got renamed
	snap, err := st.replay(st.path, -1)
	haveSnap := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return last, false, err
	}
	journals, err := st.journals()
	if err != nil {
		return last, false, err
	}
	// The first journal the state depends on: the snapshot names it; with
	// no snapshot every journal since the first start (1) is needed. A
	// snapshot of the format before headers names none.
	want := uint64(1)
	switch {
	case haveSnap && snap.legacy:
		want = 0
	case haveSnap:
		want = snap.next
	case used && len(journals) == 0:
		return last, false, st.damage("the snapshot and every journal are gone, but %s shows the files were in use", filepath.Base(st.path)+".lock")
	case len(journals) > 0 && journals[0] != 1:
		return last, false, st.damage("the snapshot is missing, and journal %d with it (the oldest left is %d)", 1, journals[0])
	}
	var prev *fileRead
	for _, n := range journals {
		if n < want {
			continue // covered by the snapshot: left by a crash while deleting
		}
		if prev == nil && want != 0 && n != want {
			return last, false, st.damage("journal %d is missing (the snapshot covers the ones before it)", want)
		}
		if prev != nil && n != prev.n+1 {
			return last, false, st.damage("journal %d is missing", prev.n+1)
		}
		r, err := st.replay(st.journalName(n), int64(n))
		if err != nil {
			return last, false, err
		}
		if !r.legacy && r.fileSize < r.length {
			return last, false, st.damage("journal %d is shorter than it was created (%d bytes of %d): it was cut", n, r.fileSize, r.length)
		}
		if prev != nil && !r.legacy && (r.prev.n != prev.n || r.prev.size != prev.size || r.prev.sum != prev.sum) {
			return last, false, st.damage("journal %d was cut short or changed after journal %d began (%d bytes now, %d then)", prev.n, n, prev.size, r.prev.size)
		}
		prev, replayed = &r, replayed || r.frames > 0
		last = journalEnding{n: r.n, size: r.size, sum: r.sum}
	}
	if prev == nil && want > 1 {
		return last, false, st.damage("journal %d is missing (the snapshot covers the ones before it)", want)
	}
	if prev == nil && len(journals) > 0 {
		last.n = journals[len(journals)-1] // all covered: go on after them
	}
	if newest := st.newestMarked(); newest > 0 && (len(journals) == 0 || journals[len(journals)-1] < newest) {
		return last, false, st.damage("journal %d, the newest, is missing (%s names it)", newest, filepath.Base(st.path)+".lock")
	}
	return last, replayed, nil
}

// damage is a load failure that a crash cannot cause: ends that were
// answered may be lost with it, and starting would let their sessions in.
func (st *state) damage(format string, args ...any) error {
	return st.errorf("%s: session ends that were answered may be lost, and starting would let their sessions in again. "+
		"Restore the files from a backup; or, accepting that, move %s, its journals and its lock aside to start without them",
		fmt.Sprintf(format, args...), filepath.Base(st.path))
}

func (st *state) journalName(n uint64) string {
	return st.path + ".journal." + strconv.FormatUint(n, 10)
}

// journals lists the numbers of the journal files, ascending.
func (st *state) journals() ([]uint64, error) {
	entries, err := os.ReadDir(filepath.Dir(st.path))
	if err != nil {
		return nil, st.errorf("%v", err)
	}
	prefix := filepath.Base(st.path) + ".journal."
	var out []uint64
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok {
			if n, err := strconv.ParseUint(rest, 10, 64); err == nil {
				out = append(out, n)
			} else if strings.HasSuffix(rest, ".tmp") {
				_ = os.Remove(filepath.Join(filepath.Dir(st.path), e.Name())) // never renamed into place
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// fileRead is what replay learned of one file.
type fileRead struct {
	n        uint64 // journal number
	legacy   bool   // a file of the format before headers
	next     uint64 // snapshot: the first journal it does not cover
	prev     journalEnding
	length   int64 // journal: the length it was created with
	frames   int
	size     int64  // where the whole frames end
	sum      uint32 // CRC-32C of everything before size
	fileSize int64
}

// replay merges the records of one file (the snapshot when n < 0, else
// journal n) into the store. A journal may end in a torn frame (a crash
// during an append, whose End was therefore never answered): it is ignored.
// Any other damage is an error, because ends may be behind it and starting
// without them would revive sessions (S3).
func (st *state) replay(name string, n int64) (fileRead, error) {
	r := fileRead{n: uint64(max(n, 0))}
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return r, err
		}
		return r, st.errorf("%v", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		r.fileSize = fi.Size()
	}
	br := bufio.NewReaderSize(f, 1<<16)
	base := filepath.Base(name)
	magic, v1, hdrLen := snapshotMagic, snapshotMagicV1, snapshotHeader
	if n >= 0 {
		magic, v1, hdrLen = journalMagic, journalMagicV1, journalHeader
	}
	head := make([]byte, len(magic)+hdrLen)
	got, _ := io.ReadFull(br, head[:len(magic)])
	switch string(head[:got]) {
	case magic:
		if _, err := io.ReadFull(br, head[len(magic):]); err != nil || !r.header(head[len(magic):], n >= 0) {
			return r, st.damage("%s: its header is cut or damaged (it is written whole, before any record)", base)
		}
	case v1:
		r.legacy = true
	default:
		return r, st.damage("%s: no sessiongate header (%d bytes of it): it is written whole, before any record, so the file was emptied, cut or replaced", base, got)
	}
	if r.legacy {
		head = head[:len(magic)]
	}
	r.size, r.sum = int64(len(head)), crc32.Update(0, castagnoli, head)
	frame := func(hdr, payload []byte) {
		r.frames++
		r.size += int64(len(hdr) + len(payload))
		r.sum = crc32.Update(crc32.Update(r.sum, castagnoli, hdr), castagnoli, payload)
	}
	err = readBody(br, int64(len(head)), frame, st.s.restore)
	if errors.Is(err, errTornTail) && n >= 0 {
		st.log.Warn("state file: ignoring a torn last record of a journal (interrupted by a crash, never answered)", "file", name)
		err = nil
	}
	if err != nil {
		return r, st.damage("%s: %v", base, err)
	}
	return r, nil
}

// header decodes a file's header, reporting whether its checksum holds.
func (r *fileRead) header(h []byte, journal bool) bool {
	body, sum := h[:len(h)-4], binary.BigEndian.Uint32(h[len(h)-4:])
	if crc(body) != sum {
		return false
	}
	if journal {
		r.prev = journalEnding{n: binary.BigEndian.Uint64(body), size: int64(binary.BigEndian.Uint64(body[8:])), sum: binary.BigEndian.Uint32(body[16:])}
		r.length = int64(binary.BigEndian.Uint64(body[20:]))
	} else {
		r.next = binary.BigEndian.Uint64(body)
	}
	return true
}

// appendHeader appends a header whose body is fields, and its checksum.
func appendHeader(b []byte, fields ...uint64) []byte {
	start := len(b)
	for i, v := range fields {
		if i == 2 { // a journal header's CRC is 4 bytes
			b = binary.BigEndian.AppendUint32(b, uint32(v))
			continue
		}
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return binary.BigEndian.AppendUint32(b, crc(b[start:]))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errTornTail = errors.New("torn last frame")

// readFrames checks the magic and calls fn for every pair of every frame.
// It returns errTornTail for a frame cut short at the end of the input, or
// a bad one followed only by zeros (what a crash during an append leaves).
func readFrames(r io.Reader, magic string, fn func(k string, v []byte) error) error {
	head := make([]byte, len(magic))
	n, err := io.ReadFull(r, head)
	if string(head[:n]) != magic[:n] {
		return errors.New("not a sessiongate state file (bad magic)")
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errTornTail // created, never fully written
		}
		return err
	}
	return readBody(r, int64(len(magic)), func(_, _ []byte) {}, fn)
}

// readBody reads the frames that follow a file's head (off bytes), calling
// frame for each and fn for every pair of it. Zeros from a frame boundary to
// the end are the unwritten rest of a journal.
func readBody(r io.Reader, off int64, frame func(hdr, payload []byte), fn func(k string, v []byte) error) error {
	var hdr [frameHeader]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return errTornTail
			}
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n == 0 && binary.BigEndian.Uint32(hdr[4:]) == 0 {
			if err := badFrame(r, off, "impossible length"); !errors.Is(err, errTornTail) {
				return err
			}
			return nil // the unwritten rest
		}
		if n == 0 || n > maxFrame {
			return badFrame(r, off, "impossible length")
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errTornTail
			}
			return err
		}
		if crc(payload) != binary.BigEndian.Uint32(hdr[4:]) {
			return badFrame(r, off, "checksum mismatch")
		}
		if err := eachPair(payload, fn); err != nil {
			return fmt.Errorf("frame at offset %d: %w", off, err)
		}
		frame(hdr[:], payload)
		off += frameHeader + int64(n)
	}
}

// badFrame tells a torn tail (nothing but zeros follows) from damage.
func badFrame(r io.Reader, off int64, what string) error {
	var buf [4096]byte
	for {
		n, err := r.Read(buf[:])
		for _, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("frame at offset %d: %s", off, what)
			}
		}
		if err == io.EOF {
			return errTornTail
		}
		if err != nil {
			return err
		}
	}
}

func eachPair(p []byte, fn func(k string, v []byte) error) error {
	for len(p) > 0 {
		var kv [2][]byte
		for i := range kv {
			n, w := binary.Uvarint(p)
			if w <= 0 || n > uint64(len(p)-w) {
				return errors.New("malformed record")
			}
			kv[i], p = p[w:w+int(n)], p[w+int(n):]
		}
		if err := fn(string(kv[0]), kv[1]); err != nil {
			return err
		}
	}
	return nil
}

func appendPair(b []byte, k string, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// reserveFrame appends room for a frame header to b; the payload follows,
// and closeFrame fills the header in once the payload is complete.
func reserveFrame(b []byte) (out []byte, start int) {
	return append(b, make([]byte, frameHeader)...), len(b)
}

// closeFrame writes the header of the frame that starts at b[start:].
func closeFrame(b []byte, start int) []byte {
	p := b[start+frameHeader:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(p)))
	binary.BigEndian.PutUint32(b[start+4:], crc(p))
	return b
}

// restore merges one loaded record into the store (authz.MergeSessions,
// authz.MergeScopes; a claim keeps the later keep-until). Records past their KeepUntil are dropped.
func (s *Store) restore(k string, v []byte) error {
	now := s.now()
	var buf []byte
	switch {
	case len(k) > 0 && k[0] == sessionTag:
		var r authz.Session
		if err := unmarshalSession(&r, k, v); err != nil {
			return err
		}
		// A grant inside the record (written before grants were kept
		// apart) is restored as a grant record of its own.
		embedded := r
		r.Grant = ""
		old, found, inHot, err := s.record(k, now)
		if err != nil {
			return err
		}
		if found {
			r = authz.MergeSessions(old, r)
		}
		if r.KeepUntil < now {
			return nil
		}
		if !r.Ended() {
			if err := putSession(s.hot, k, &r, &buf); err != nil {
				return err
			}
			if embedded.Grant != "" {
				return s.restoreGrant(k, &embedded, now)
			}
			return s.keepGrant(k, r.KeepUntil)
		}
		if err := putSession(s.cold, k, &r, &buf); err != nil {
			return err
		}
		if inHot {
			s.hot.Delete(k) // the hot copy would hide the end
		}
		s.dropGrant(k)
		return nil
	case len(k) > 0 && k[0] == scopeTag:
		var sc authz.ScopeState
		if err := sc.UnmarshalBinary(v); err != nil {
			return err
		}
		old, found, err := s.scope(k, now)
		if err != nil {
			return err
		}
		if found {
			sc = authz.MergeScopes(old, sc)
			if old.Current != "" && sc.Current != old.Current {
				// As in Begin: the displaced session stays indexed.
				if err := s.indexAdd(indexKeyOfScope(k), []indexEntry{{id: old.Current, keepUntil: old.KeepUntil}}); err != nil {
					return err
				}
			}
		}
		if sc.KeepUntil < now {
			return nil
		}
		return s.putScope(k, &sc, &buf)
	case len(k) > 0 && k[0] == claimTag:
		until, ok := claimUntil(v)
		if !ok {
			return authz.ErrCorruptRecord
		}
		if old, err := get(s.cold, k); err != nil {
			return err
		} else if o, ok := claimUntil(old); ok {
			until = max(until, o)
		}
		if until < now {
			return nil
		}
		return set(s.cold, k, binary.BigEndian.AppendUint64(nil, uint64(until)))
	case len(k) > 0 && k[0] == grantTag:
		if _, ok := grantUntil(v); !ok {
			return authz.ErrCorruptRecord
		}
		var g authz.Session
		g.KeepUntil, g.GrantAt = int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
		g.Grant = string(v[grantHeader:])
		return s.restoreGrant(string(sessionTag)+k[1:], &g, now)
	case len(k) > 0 && k[0] == indexTag:
		list, ok := decodeIndex(v)
		if !ok {
			return authz.ErrCorruptRecord
		}
		return s.indexAdd(k, list)
	}
	return errors.New("record with an unknown key")
}

// journalEnd makes one End durable: its session record (when there is one)
// and its scope record, appended and fsynced before it returns.
func (st *state) journalEnd(sk string, r *authz.Session, found bool, ck string, sc *authz.ScopeState) error {
	b, start := reserveFrame(make([]byte, 0, 256))
	if found {
		v, err := r.AppendKeyed(nil)
		if err != nil {
			return err
		}
		b = appendPair(b, sk, v)
	}
	v, err := sc.AppendBinary(nil)
	if err != nil {
		return err
	}
	b = closeFrame(appendPair(b, ck, v), start)
	req := journalReq{frame: b, done: make(chan error, 1)}
	select {
	case st.reqs <- req:
	case <-st.wEnd:
		return st.errorf("closed")
	}
	return <-req.done
}

// writer owns the journal file: it batches Ends into one write and one
// fsync, and switches to a new journal when compaction asks.
func (st *state) writer() {
	defer close(st.wEnd)
	batch := make([]journalReq, 0, maxBatch)
	var buf []byte
	for {
		select {
		case req := <-st.reqs:
			batch = append(batch[:0], req)
		more:
			for len(batch) < maxBatch {
				select {
				case req := <-st.reqs:
					batch = append(batch, req)
				default:
					break more
				}
			}
			buf = buf[:0]
			for _, r := range batch {
				buf = append(buf, r.frame...)
			}
			err := st.append(buf)
			for _, r := range batch {
				r.done <- err
			}
		case reply := <-st.rotate:
			n, err := st.next()
			reply <- rotation{n, err}
		case <-st.wstop:
			st.closeJournal()
			return
		}
	}
}

// append writes and fsyncs frames. After a failure the file is not trusted
// again (a failed fsync may have dropped pages that a retry would report
// as clean): Ends fail until a compaction has moved to a new journal.
func (st *state) append(b []byte) error {
	if st.broken != nil {
		return st.errorf("journal unusable since an earlier failure (%v); retrying in the background", st.broken)
	}
	_, err := st.f.WriteAt(b, st.size)
	if err == nil {
		err = st.f.Sync()
	}
	if err != nil {
		st.broken = err
		st.setFault(err)
		st.kick()
		return st.errorf("journal: %v", err)
	}
	st.size += int64(len(b))
	st.sum = crc32.Update(st.sum, castagnoli, b)
	if st.limit > 0 && st.size > st.limit {
		st.kick()
	}
	return nil
}

// startJournal creates the journal after prev, with its magic and a header
// recording how prev ended, atomically (a temporary file renamed into
// place), and makes it current (writer goroutine or before it starts).
func (st *state) startJournal(prev journalEnding) error {
	n := prev.n + 1
	name := st.journalName(n)
	if _, err := os.Lstat(name); err == nil {
		return st.errorf("journal %d exists already", n)
	}
	length := max(st.limit, minJournalLength)
	head := appendHeader([]byte(journalMagic), prev.n, uint64(prev.size), uint64(prev.sum), uint64(length))
	tmp := name + ".tmp"
	f, err := st.open(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return st.errorf("journal: %v", err)
	}
	_, err = f.Write(head)
	if err == nil {
		err = f.Truncate(length) // sparse: zeros, no blocks
	}
	if err == nil {
		err = filelock.Commit(f, tmp, name)
	} else {
		f.Close()
	}
	if err == nil {
		f, err = st.open(name, os.O_WRONLY, 0o600)
	}
	if err == nil {
		st.markNewest(n)
	}
	if err != nil {
		os.Remove(tmp)
		return st.errorf("journal: %v", err)
	}
	st.f, st.n, st.size, st.sum, st.broken = f, n, int64(len(head)), crc32.Update(0, castagnoli, head), nil
	return nil
}

// next switches to a new journal, returning its number. The old one was
// fsynced with its last batch, or is broken, and the coming snapshot covers
// what it lost; its successor records it as it is on disk.
func (st *state) next() (uint64, error) {
	old := st.f
	end := journalEnding{n: st.n, size: st.size, sum: st.sum}
	if st.broken != nil {
		var err error
		if end, err = st.onDisk(st.n); err != nil {
			return 0, err
		}
	}
	if err := st.startJournal(end); err != nil {
		return 0, err
	}
	old.Close()
	return st.n, nil
}

// onDisk reads journal n to learn where its whole frames end and their
// checksum, as the load will.
func (st *state) onDisk(n uint64) (journalEnding, error) {
	f, err := os.Open(st.journalName(n))
	if err != nil {
		return journalEnding{}, st.errorf("%v", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	head := make([]byte, len(journalMagic)+journalHeader)
	if _, err := io.ReadFull(br, head); err != nil {
		return journalEnding{}, st.errorf("journal %d: %v", n, err)
	}
	e := journalEnding{n: n, size: int64(len(head)), sum: crc32.Update(0, castagnoli, head)}
	err = readBody(br, e.size, func(hdr, payload []byte) {
		e.size += int64(len(hdr) + len(payload))
		e.sum = crc32.Update(crc32.Update(e.sum, castagnoli, hdr), castagnoli, payload)
	}, func(string, []byte) error { return nil })
	if err != nil && !errors.Is(err, errTornTail) {
		return journalEnding{}, st.errorf("journal %d: %v", n, err)
	}
	return e, nil
}

// markNewest records journal n as the newest in the lock file, so that its
// deletion is found at load. Best effort: a lock file that cannot be written
// only loses that check.
func (st *state) markNewest(n uint64) {
	f, err := os.OpenFile(st.path+".lock", os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.WriteAt(appendHeader(nil, n), 0); err == nil {
		_ = f.Sync()
	}
}

// newestMarked is the journal markNewest last recorded, 0 if none.
func (st *state) newestMarked() uint64 {
	b, err := os.ReadFile(st.path + ".lock")
	if err != nil || len(b) < snapshotHeader {
		return 0
	}
	var r fileRead
	if !r.header(b[:snapshotHeader], false) {
		return 0
	}
	return r.next
}

// closeJournal closes the current journal. It stays, even empty: the
// snapshot names it, and a missing one is damage.
func (st *state) closeJournal() { st.f.Close() }

func (st *state) setFault(err error) { st.fault.Store(&err) }

// Err reports why the state file cannot be written now, nil while it can.
func (st *state) Err() error {
	if p := st.fault.Load(); p != nil {
		return st.errorf("cannot write (%v): ends are refused until it can", *p)
	}
	return nil
}

// noteActivity marks records that Begin or Touch changed, for the next
// activity frame.
func (st *state) noteActivity(keys ...string) {
	if st.actEvery <= 0 {
		return
	}
	st.activityMu.Lock()
	for _, k := range keys {
		st.activity[k] = struct{}{}
	}
	st.activityMu.Unlock()
}

// flushActivity journals the current records of the keys noted since the
// last call, in one write and one fsync. Replaying them only merges (an end
// stays an end, activity only grows), so their order against Ends does not
// matter. A failure loses nothing the next snapshot does not cover.
func (st *state) flushActivity() error {
	st.activityMu.Lock()
	keys := st.activity
	if len(keys) == 0 {
		st.activityMu.Unlock()
		return nil
	}
	st.activity = make(map[string]struct{}, len(keys))
	st.activityMu.Unlock()
	b, start := reserveFrame(nil)
	for k := range keys {
		v, err := st.s.hot.Get(k) // hot holds the newer copy
		if err != nil {
			if v, err = st.s.cold.Get(k); err != nil {
				continue // gone: expired, or never stored
			}
		}
		b = appendPair(b, k, v)
		if len(b)-start > snapshotFrame {
			b = closeFrame(b, start)
			b, start = reserveFrame(b)
		}
	}
	if len(b)-start > frameHeader {
		b = closeFrame(b, start)
	} else {
		b = b[:start]
	}
	if len(b) == 0 {
		return nil
	}
	req := journalReq{frame: b, done: make(chan error, 1)}
	select {
	case st.reqs <- req:
	case <-st.wEnd:
		return st.errorf("closed")
	}
	if err := <-req.done; err != nil {
		return err
	}
	st.log.Debug("state file: activity journaled", "records", len(keys))
	return nil
}

// kick asks for a compaction; it never blocks.
func (st *state) kick() {
	select {
	case st.compact <- struct{}{}:
	default:
	}
}

// loop compacts when asked (journal over its limit or broken), every
// interval, and again with backoff after a failure.
func (st *state) loop() {
	defer close(st.loopEnd)
	var tick, activity <-chan time.Time
	if st.interval > 0 {
		t := time.NewTicker(st.interval)
		defer t.Stop()
		tick = t.C
	}
	if st.actEvery > 0 {
		t := time.NewTicker(st.actEvery)
		defer t.Stop()
		activity = t.C
	}
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	wait := time.Duration(0)
	for {
		select {
		case <-st.stop:
			return
		case <-st.compact:
		case <-tick:
		case <-retry.C:
		case <-activity:
			if err := st.flushActivity(); err != nil {
				st.log.Debug("state file: activity not journaled; the next snapshot keeps it", "err", err)
			}
			continue
		}
		if err := st.compactNow(); err != nil {
			st.setFault(err)
			wait = min(max(2*wait, retryMin), retryMax)
			st.log.Error("state file: compaction failed; ends stay in the journals", "err", err, "retry_in", wait)
			retry.Reset(wait)
			continue
		}
		if st.fault.Swap(nil) != nil {
			st.log.Info("state file: writable again; ends are acknowledged")
		}
		wait = 0
	}
}

// compactNow switches to a new journal, snapshots the store and deletes the
// journals the snapshot covers.
func (st *state) compactNow() error {
	st.compactMu.Lock()
	defer st.compactMu.Unlock()
	reply := make(chan rotation, 1)
	select {
	case st.rotate <- reply:
	case <-st.wEnd:
		return st.errorf("closed")
	}
	rot := <-reply
	if rot.err != nil {
		return rot.err
	}
	if err := st.writeSnapshot(rot.n); err != nil {
		return err
	}
	journals, err := st.journals()
	if err != nil {
		return err
	}
	for _, n := range journals {
		if n < rot.n {
			if err := os.Remove(st.journalName(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return st.errorf("%v", err)
			}
		}
	}
	if err := filelock.SyncDir(filepath.Dir(st.path)); err != nil {
		return st.errorf("%v", err)
	}
	return nil
}

// writeSnapshot writes every record of the store atomically, with the
// number of the first journal it does not cover. It walks hot
// before cold; a record in both is merged on loading, like any other copy.
func (st *state) writeSnapshot(next uint64) (err error) {
	tmp := st.path + ".tmp"
	f, err := st.open(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return st.errorf("snapshot: %v", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = st.errorf("snapshot: %v", err)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<16)
	if _, err := w.Write(appendHeader([]byte(snapshotMagic), next)); err != nil {
		return err
	}
	now := st.s.now()
	b, start := reserveFrame(nil)
	for _, c := range []*bigcache.BigCache{st.s.hot, st.s.cold} {
		for it := c.Iterator(); it.SetNext(); {
			e, err := it.Value()
			if err != nil {
				continue // gone meanwhile: moved to cold, or expired
			}
			if keep, ok := keepUntil(e.Key(), e.Value()); ok && keep < now {
				continue
			}
			b = appendPair(b, e.Key(), e.Value())
			if len(b)-start > snapshotFrame {
				if _, err := w.Write(closeFrame(b, start)); err != nil {
					return err
				}
				b, start = reserveFrame(b[:0])
			}
		}
	}
	if len(b)-start > frameHeader {
		if _, err := w.Write(closeFrame(b, start)); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, st.path); err != nil {
		return err
	}
	return filelock.SyncDir(filepath.Dir(st.path))
}

// close writes a final snapshot and stops both goroutines. Ends that race
// with it land in the new journal, which the next start replays.
func (st *state) close() error {
	close(st.stop)
	<-st.loopEnd
	err := st.compactNow()
	close(st.wstop)
	<-st.wEnd
	st.unlock()
	return err
}
