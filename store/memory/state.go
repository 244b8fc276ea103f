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
// Each file is an 8-byte magic followed by frames: a big-endian uint32
// payload length, the CRC-32C of the payload, and the payload, which is a
// sequence of (uvarint key length, key, uvarint value length, value) pairs
// holding the store's own keys and the authz record encodings. A journal
// frame is one End (its session and scope records), so that a torn write
// loses a whole End, never half of one.
//
// Loading merges records instead of overwriting them: an ended session stays
// ended, live sessions keep the latest activity, scope ends only rise. The
// merge does not depend on order, so a record in both the snapshot and a
// journal (a crash between writing the snapshot and deleting the journals)
// is harmless, and compaction never has to stop Ends: it switches to a new
// journal first, snapshots the memory (which already holds every End of the
// old journals), and then deletes the old journals.
//
// Begin and Touch are not journaled: a crash (not a graceful stop) loses the
// sessions begun and the activity recorded since the last snapshot. Clients
// then open a new session with the same token; no end is lost.

const (
	snapshotMagic = "SGSNAP01"
	journalMagic  = "SGJRNL01"
	frameHeader   = 8
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
func crc(p []byte) uint32 { return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) }

// file is what the state file needs of an open file; tests inject failures.
type file interface {
	io.Writer
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

	// Owned by the writer goroutine.
	f      file
	n      uint64 // number of the journal f
	size   int64
	broken error // set after a failed write or fsync: f is not trusted
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
		limit: o.JournalLimit, interval: o.SnapshotInterval,
		reqs: make(chan journalReq), rotate: make(chan chan rotation), compact: make(chan struct{}, 1),
		stop: make(chan struct{}), loopEnd: make(chan struct{}), wstop: make(chan struct{}), wEnd: make(chan struct{}),
	}
	if st.open == nil {
		st.open = osOpen
	}
	unlock, err := filelock.Lock(st.path + ".lock")
	if err != nil {
		return nil, st.errorf("%v", err)
	}
	st.unlock = unlock
	last, replayed, err := st.load()
	if err == nil {
		err = st.startJournal(last + 1)
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

// load restores the snapshot and every journal into the store, returning the
// highest journal number seen and whether any journal was replayed.
func (st *state) load() (last uint64, replayed bool, err error) {
	_ = os.Remove(st.path + ".tmp") // a snapshot that never got renamed
	if err := st.replay(st.path, snapshotMagic, false); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, false, err
	}
	journals, err := st.journals()
	if err != nil {
		return 0, false, err
	}
	for _, n := range journals {
		if err := st.replay(st.journalName(n), journalMagic, true); err != nil {
			return 0, false, err
		}
		last, replayed = n, true
	}
	return last, replayed, nil
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
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// replay merges the records of one file into the store. A journal may end
// in a torn frame (a crash during an append, whose End was therefore never
// answered): it is ignored. Any other damage is an error, because ends may
// be behind it and starting without them would revive sessions (S3).
func (st *state) replay(name, magic string, tornTailOK bool) error {
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return err
		}
		return st.errorf("%v", err)
	}
	defer f.Close()
	err = readFrames(bufio.NewReaderSize(f, 1<<16), magic, st.s.restore)
	if errors.Is(err, errTornTail) && tornTailOK {
		st.log.Warn("state file: ignoring a torn last record of a journal (an End interrupted by a crash, never answered)", "file", name)
		return nil
	}
	if err != nil {
		return st.errorf("%s: %v (move the file aside to start without it)", filepath.Base(name), err)
	}
	return nil
}

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
	var hdr [frameHeader]byte
	var payload []byte
	for off := int64(len(magic)); ; {
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
		if err := r.UnmarshalBinary(v); err != nil {
			return err
		}
		old, found, inHot, err := s.session(k, now)
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
			return putSession(s.hot, k, &r, &buf)
		}
		if err := putSession(s.cold, k, &r, &buf); err != nil {
			return err
		}
		if inHot {
			s.hot.Delete(k) // the hot copy would hide the end
		}
		return nil
	case len(k) > 0 && k[0] == scopeTag:
		var sc authz.ScopeState
		if err := sc.UnmarshalBinary(v); err != nil {
			return err
		}
		if old, found, err := s.scope(k, now); err != nil {
			return err
		} else if found {
			sc = authz.MergeScopes(old, sc)
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
		v, err := r.AppendBinary(nil)
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
	_, err := st.f.Write(b)
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
	if st.limit > 0 && st.size > st.limit {
		st.kick()
	}
	return nil
}

// startJournal creates journal n and makes it current (writer goroutine or
// before it starts).
func (st *state) startJournal(n uint64) error {
	name := st.journalName(n)
	f, err := st.open(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return st.errorf("%v", err)
	}
	_, err = io.WriteString(f, journalMagic)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(filepath.Dir(name))
	}
	if err != nil {
		f.Close()
		os.Remove(name)
		return st.errorf("journal: %v", err)
	}
	st.f, st.n, st.size, st.broken = f, n, int64(len(journalMagic)), nil
	return nil
}

// next switches to a new journal, returning its number. The old one was
// fsynced with its last batch (or is broken, and the coming snapshot covers
// what it lost).
func (st *state) next() (uint64, error) {
	old := st.f
	if err := st.startJournal(st.n + 1); err != nil {
		return 0, err
	}
	old.Close()
	return st.n, nil
}

// closeJournal closes the current journal, deleting it when it holds no End.
func (st *state) closeJournal() {
	st.f.Close()
	if st.size == int64(len(journalMagic)) && st.broken == nil {
		os.Remove(st.journalName(st.n))
	}
}

func (st *state) setFault(err error) { st.fault.Store(&err) }

// Err reports why the state file cannot be written now, nil while it can.
func (st *state) Err() error {
	if p := st.fault.Load(); p != nil {
		return st.errorf("cannot write (%v): ends are refused until it can", *p)
	}
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
	var tick <-chan time.Time
	if st.interval > 0 {
		t := time.NewTicker(st.interval)
		defer t.Stop()
		tick = t.C
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
	if err := st.writeSnapshot(); err != nil {
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
	if err := syncDir(filepath.Dir(st.path)); err != nil {
		return st.errorf("%v", err)
	}
	return nil
}

// writeSnapshot writes every record of the store atomically. It walks hot
// before cold; a record in both is merged on loading, like any other copy.
func (st *state) writeSnapshot() (err error) {
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
	if _, err := w.WriteString(snapshotMagic); err != nil {
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
	return syncDir(filepath.Dir(st.path))
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
