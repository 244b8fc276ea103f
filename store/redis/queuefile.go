package redis

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/filelock"
)

// queueFile keeps the ends the fallback decided during an outage on local
// disk until Redis has them (Options.QueueFile), so that a replica stopped
// or killed before Redis returns does not take them with it: each End is
// appended and fsynced before the fallback answers, the file is read back
// into the queue at start, and emptied once the queue is written to Redis.
//
// Layout: an 8-byte magic, then frames: a big-endian uint32 payload length,
// the payload's CRC-32C, and the payload — the policy and the session id
// (uvarint length, bytes each), the 16-byte scope digest, and the end's
// cause, time and KeepUntil (varints). The magic is written to a temporary
// file that is renamed into place, so a file without it is damage, not a
// crash. A crash while appending leaves at most a torn last frame, whose End
// was never answered; any other damage stops the start, since ends that were
// answered may be behind it.
type queueFile struct {
	path   string
	mu     sync.Mutex // serializes appends and truncation
	f      *os.File
	size   int64
	unlock func()
	broken error // after a failed write or fsync the file is not trusted
}

const (
	queueMagic    = "SGQUEUE1"
	queueFrameHdr = 8
	maxQueueFrame = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openQueueFile locks path, reads the ends it holds and opens it for
// appending, creating it (atomically, with its magic) if missing.
func openQueueFile(path string) (*queueFile, []queuedEnd, error) {
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("redis store: queue file %s: %s", path, fmt.Sprintf(format, args...))
	}
	unlock, err := filelock.Lock(path + ".lock")
	if err != nil {
		return nil, nil, errorf("%v", err)
	}
	q := &queueFile{path: path, unlock: unlock}
	ends, size, err := readQueue(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		err = createQueue(path)
		size = int64(len(queueMagic))
	case err != nil:
		err = errorf("%v: ends decided during a Redis outage may be lost with it, and their sessions would be let in again; restore it, or move it aside to start without them", err)
	}
	if err == nil {
		q.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	}
	if err == nil && size != fileSize(q.f) {
		// A torn last frame: cut it off so that appends follow the last
		// whole one.
		if err = q.f.Truncate(size); err == nil {
			err = q.f.Sync()
		}
	}
	if err != nil {
		if q.f != nil {
			q.f.Close()
		}
		unlock()
		return nil, nil, errorf("%v", err)
	}
	q.size = size
	return q, ends, nil
}

func fileSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	return fi.Size()
}

// createQueue writes an empty queue file atomically.
func createQueue(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, queueMagic); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	return filelock.Commit(f, tmp, path)
}

// readQueue returns the ends in the file and the length of its whole
// frames (a torn last frame excluded).
func readQueue(path string) ([]queuedEnd, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	head := make([]byte, len(queueMagic))
	if _, err := io.ReadFull(r, head); err != nil || string(head) != queueMagic {
		return nil, 0, errors.New("not a sessiongate queue file (bad or missing magic)")
	}
	off := int64(len(queueMagic))
	var ends []queuedEnd
	var hdr [queueFrameHdr]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ends, off, nil // the end, or a torn header
			}
			return nil, 0, err
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n == 0 || n > maxQueueFrame {
			if rest, _ := io.ReadAll(r); allZero(hdr[:]) && allZero(rest) {
				return ends, off, nil // a torn append the file system filled with zeros
			}
			return nil, 0, fmt.Errorf("frame at offset %d: impossible length", off)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ends, off, nil // torn
			}
			return nil, 0, err
		}
		if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
			if rest, _ := io.ReadAll(r); len(rest) == 0 {
				return ends, off, nil // the last frame, torn
			}
			return nil, 0, fmt.Errorf("frame at offset %d: checksum mismatch", off)
		}
		q, err := decodeQueued(p)
		if err != nil {
			return nil, 0, fmt.Errorf("frame at offset %d: %v", off, err)
		}
		ends = append(ends, q)
		off += queueFrameHdr + int64(n)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func encodeQueued(q queuedEnd) []byte {
	b := make([]byte, queueFrameHdr, queueFrameHdr+64+len(q.policy)+len(q.id))
	b = binary.AppendUvarint(b, uint64(len(q.policy)))
	b = append(b, q.policy...)
	b = binary.AppendUvarint(b, uint64(len(q.id)))
	b = append(b, q.id...)
	b = append(b, q.scope[:]...)
	b = binary.AppendUvarint(b, uint64(q.e.Cause))
	b = binary.AppendVarint(b, q.e.At)
	b = binary.AppendVarint(b, q.e.KeepUntil)
	p := b[queueFrameHdr:]
	binary.BigEndian.PutUint32(b, uint32(len(p)))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(p, castagnoli))
	return b
}

func decodeQueued(p []byte) (queuedEnd, error) {
	var q queuedEnd
	bad := errors.New("malformed end")
	str := func() (string, bool) {
		n, w := binary.Uvarint(p)
		if w <= 0 || n > uint64(len(p)-w) {
			return "", false
		}
		s := string(p[w : w+int(n)])
		p = p[w+int(n):]
		return s, true
	}
	var ok bool
	if q.policy, ok = str(); !ok {
		return q, bad
	}
	if q.id, ok = str(); !ok || len(p) < len(q.scope) {
		return q, bad
	}
	p = p[copy(q.scope[:], p):]
	cause, w := binary.Uvarint(p)
	if w <= 0 {
		return q, bad
	}
	p = p[w:]
	q.e.Cause = authz.EndCause(cause)
	for _, v := range []*int64{&q.e.At, &q.e.KeepUntil} {
		x, w := binary.Varint(p)
		if w <= 0 {
			return q, bad
		}
		*v, p = x, p[w:]
	}
	if len(p) != 0 || q.e.At <= 0 {
		return q, bad
	}
	return q, nil
}

// append makes one end durable before it returns.
func (q *queueFile) append(e queuedEnd) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.broken != nil {
		return fmt.Errorf("queue file %s unusable since an earlier failure: %v", q.path, q.broken)
	}
	b := encodeQueued(e)
	_, err := q.f.Write(b)
	if err == nil {
		err = q.f.Sync()
	}
	if err != nil {
		// A failed fsync may have dropped pages a retry would call clean.
		q.broken = err
		return fmt.Errorf("queue file %s: %v", q.path, err)
	}
	q.size += int64(len(b))
	return nil
}

// clear empties the file once every end in it is in Redis. The caller holds
// the queue's lock, so that no end is appended between the two.
func (q *queueFile) clear() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.size == int64(len(queueMagic)) && q.broken == nil {
		return nil
	}
	err := q.f.Truncate(int64(len(queueMagic)))
	if err == nil {
		err = q.f.Sync()
	}
	if err != nil {
		q.broken = err
		return fmt.Errorf("queue file %s: %v", q.path, err)
	}
	q.size, q.broken = int64(len(queueMagic)), nil
	return nil
}

func (q *queueFile) close() error {
	err := q.f.Close()
	q.unlock()
	return err
}

// err reports why the file cannot be written, nil while it can.
func (q *queueFile) err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.broken != nil {
		return fmt.Errorf("redis store: queue file %s: cannot write (%v): ends during an outage are refused", q.path, q.broken)
	}
	return nil
}
