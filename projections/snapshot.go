package projections

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/keyledger/keyledger/domain"
)

// SnapshotVersion names the snapshot encoding; a snapshot of another
// version is ignored and the projections are replayed from the stream.
const SnapshotVersion = 2

// snapshotHeader opens a snapshot: what it is and where in the stream.
type snapshotHeader struct {
	Version int
	Seq     uint64
	SeqHash string // stored hash of the event at Seq: ties it to one stream
	Keys    int
	Taken   int64 // Unix microseconds; zero in snapshots from before it was written
}

// snapshotKey is one key and every secret hash it ever had.
type snapshotKey struct {
	Key    domain.Key
	Hashes []string
}

// SnapshotStore keeps the newest snapshot. Get returns nil, nil when there
// is none. MsgHash gives the stored hash of the stream's message at seq.
type SnapshotStore interface {
	Put(ctx context.Context, r io.Reader) error
	Get(ctx context.Context) (io.ReadCloser, error)
	MsgHash(ctx context.Context, seq uint64) (string, error)
}

// Snapshotter saves the listing and the verify index every so many events
// and restores them at start, so that a start replays only the tail. Add it
// to the runner after both. A snapshot that is missing, corrupt, of another
// version or of another stream is logged and ignored: the start replays
// everything, never builds a wrong index.
type Snapshotter struct {
	Store   SnapshotStore
	Listing *Listing
	Index   *VerifyIndex
	Every   uint64 // events between snapshots (100,000 when zero)
	Logger  *slog.Logger

	seqMark
	lastSaved atomic.Uint64
	saving    atomic.Bool
	newest    atomic.Pointer[snapshotHeader] // saved or restored; nil: none yet
}

// Newest returns the sequence of the newest snapshot this instance saved or
// started from, and when it was taken; ok is false while there is none
// (or it was written before snapshots recorded when).
func (s *Snapshotter) Newest() (seq uint64, taken time.Time, ok bool) {
	h := s.newest.Load()
	if h == nil || h.Taken == 0 {
		return 0, time.Time{}, false
	}
	return h.Seq, time.UnixMicro(h.Taken), true
}

func (s *Snapshotter) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Restore loads the newest snapshot into the listing and the index and
// returns its sequence, from which the runner resumes; 0 when none fits.
func (s *Snapshotter) Restore(ctx context.Context) uint64 {
	start := time.Now()
	rc, err := s.Store.Get(ctx)
	if err != nil || rc == nil {
		if err != nil {
			s.log().Warn("no usable snapshot: replaying the whole stream", "err", err)
		}
		return 0
	}
	defer rc.Close()
	h, keys, err := decodeSnapshot(rc)
	if err == nil {
		err = s.fits(ctx, h)
	}
	if err != nil {
		s.log().Warn("snapshot ignored: replaying the whole stream", "err", err)
		return 0
	}
	s.Listing.restore(keys, h.Seq)
	s.Index.restore(keys, h.Seq)
	s.mark(h.Seq)
	s.lastSaved.Store(h.Seq)
	s.newest.Store(&h)
	s.log().Info("projections restored from a snapshot", "seq", h.Seq, "keys", h.Keys, "took", time.Since(start))
	return h.Seq
}

func (s *Snapshotter) fits(ctx context.Context, h snapshotHeader) error {
	if h.Version != SnapshotVersion {
		return fmt.Errorf("snapshot version %d, this build reads %d", h.Version, SnapshotVersion)
	}
	got, err := s.Store.MsgHash(ctx, h.Seq)
	if err != nil {
		return fmt.Errorf("the snapshot's event at seq %d: %w", h.Seq, err)
	}
	if got != h.SeqHash {
		return fmt.Errorf("the snapshot was taken on another stream: the event at seq %d differs", h.Seq)
	}
	return nil
}

// Apply takes a snapshot after every Every events. It runs on the runner's
// goroutine after the listing and the index, so both stand at e.Seq; only
// the copy is taken here, the encoding and upload run in the background.
func (s *Snapshotter) Apply(e domain.Event) error {
	defer s.mark(e.Seq)
	every := s.Every
	if every == 0 {
		every = 100000
	}
	if e.Data == nil || e.Hash == "" || e.Seq-s.lastSaved.Load() < every || !s.saving.CompareAndSwap(false, true) {
		return nil
	}
	h := snapshotHeader{Version: SnapshotVersion, Seq: e.Seq, SeqHash: e.Hash, Taken: time.Now().UnixMicro()}
	keys := s.Index.snapshot()
	h.Keys = len(keys)
	go func() {
		defer s.saving.Store(false)
		if err := s.save(h, keys); err != nil {
			s.log().Warn("snapshot not saved", "seq", h.Seq, "err", err)
			return
		}
		s.lastSaved.Store(h.Seq)
		s.newest.Store(&h)
		s.log().Info("snapshot saved", "seq", h.Seq, "keys", h.Keys)
	}()
	return nil
}

// SaveNow takes and saves a snapshot of the state as it stands, waiting
// for the upload; for shutdown and tests. It must not run concurrently with
// the runner's Apply.
func (s *Snapshotter) SaveNow(seq uint64, seqHash string) error {
	keys := s.Index.snapshot()
	h := snapshotHeader{Version: SnapshotVersion, Seq: seq, SeqHash: seqHash, Keys: len(keys), Taken: time.Now().UnixMicro()}
	if err := s.save(h, keys); err != nil {
		return err
	}
	s.lastSaved.Store(seq)
	s.newest.Store(&h)
	return nil
}

func (s *Snapshotter) save(h snapshotHeader, keys []snapshotKey) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(encodeSnapshot(pw, h, keys)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err := s.Store.Put(ctx, pr)
	pr.CloseWithError(err)
	return err
}

func encodeSnapshot(w io.Writer, h snapshotHeader, keys []snapshotKey) error {
	zw := s2.NewWriter(w)
	enc := gob.NewEncoder(zw)
	if err := enc.Encode(h); err != nil {
		return err
	}
	for _, k := range keys {
		if err := enc.Encode(k); err != nil {
			return err
		}
	}
	return zw.Close()
}

func decodeSnapshot(r io.Reader) (snapshotHeader, []snapshotKey, error) {
	dec := gob.NewDecoder(s2.NewReader(r))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return h, nil, fmt.Errorf("snapshot header: %w", err)
	}
	if h.Version != SnapshotVersion {
		return h, nil, nil // fits says why
	}
	keys := make([]snapshotKey, 0, h.Keys)
	for range h.Keys {
		var k snapshotKey
		if err := dec.Decode(&k); err != nil {
			return h, nil, fmt.Errorf("snapshot key %d of %d: %w", len(keys)+1, h.Keys, err)
		}
		keys = append(keys, k)
	}
	var extra snapshotKey
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return h, nil, fmt.Errorf("snapshot holds more than its %d keys", h.Keys)
	}
	return h, keys, nil
}

// snapshot copies every key with all its hashes.
func (v *VerifyIndex) snapshot() []snapshotKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	hashes := make(map[*domain.Key][]string, len(v.keys))
	for _, ref := range v.byHash {
		hashes[ref.key] = append(hashes[ref.key], ref.hash)
	}
	out := make([]snapshotKey, 0, len(v.keys))
	for _, k := range v.keys {
		hs := hashes[k]
		slices.Sort(hs)
		out = append(out, snapshotKey{Key: *k, Hashes: hs})
	}
	return out
}

func (v *VerifyIndex) restore(keys []snapshotKey, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, sk := range keys {
		k := sk.Key
		v.keys[k.OrgID+"/"+k.ID] = &k
		for _, h := range sk.Hashes {
			if sum, ok := domain.ParseHash(h); ok {
				v.byHash[sum] = secretRef{key: &k, hash: h}
			}
		}
	}
	v.mark(seq)
}

func (l *Listing) restore(keys []snapshotKey, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, sk := range keys {
		k := sk.Key
		l.keys[k.OrgID+"/"+k.ID] = &k
		l.ids[k.OrgID] = append(l.ids[k.OrgID], k.ID)
	}
	for _, ids := range l.ids {
		slices.Sort(ids)
	}
	l.mark(seq)
}
