package projections

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// SnapshotVersion names the snapshot encoding; a snapshot of another
// version is ignored and the projections are replayed from the stream.
const SnapshotVersion = 7

// snapshotHeader opens a snapshot: what it is and where in the stream.
type snapshotHeader struct {
	Version int
	Seq     uint64
	SeqHash string // stored hash of the event at Seq: ties it to one stream
	Keys    int
	Taken   int64 // Unix microseconds; zero in snapshots from before it was written
}

// SnapshotStore keeps the newest snapshot. Get returns nil, nil when there
// is none, and an error for one that no trusted instance signed. MsgHash
// gives the stored hash of the stream's message at seq, "" when the
// stream holds none there.
type SnapshotStore interface {
	Put(ctx context.Context, r io.Reader) error
	Get(ctx context.Context) (io.ReadCloser, error)
	MsgHash(ctx context.Context, seq uint64) (string, error)
}

// Snapshotter saves the key table (the listing and the verify index) every
// so many events and restores it at start, so that a start replays only
// the tail. Add it to the runner after the table. A snapshot that is
// missing, corrupt, of another version or of another stream is logged and
// ignored: the start replays everything, never builds a wrong index.
type Snapshotter struct {
	Store  SnapshotStore
	Table  *Table
	Every  uint64 // events between snapshots (100,000 when zero)
	Logger *slog.Logger

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

// ErrStreamRewritten is Restore's answer when a snapshot that a trusted
// instance signed was taken at an event the stream no longer holds: the
// stream was truncated, or deleted and written again. An instance then
// refuses to serve rather than answer from the shorter history (where a
// revocation may be missing). Deleting the snapshot bucket, once the
// stream is known to be the right one (restored on purpose), lets it start.
var ErrStreamRewritten = errors.New("the stream no longer holds the event this deployment's signed snapshot was taken at: it was truncated or written again")

// Restore loads the newest snapshot into the listing and the index and
// returns its sequence, from which the runner resumes; 0 when none fits.
// Returns ErrStreamRewritten (wrapped) when a signed snapshot does not fit
// the stream.
func (s *Snapshotter) Restore(ctx context.Context) (uint64, error) {
	start := time.Now()
	rc, err := s.Store.Get(ctx)
	if err != nil || rc == nil {
		if err != nil {
			s.log().Warn("no usable snapshot: replaying the whole stream", "err", err)
		}
		return 0, nil
	}
	defer rc.Close()
	h, img, err := decodeSnapshot(rc)
	if err == nil {
		// Read to the end: the store checks the signed digest there.
		if _, err = io.Copy(io.Discard, rc); err != nil {
			err = fmt.Errorf("the snapshot does not match its signed digest: %w", err)
		}
	}
	if err == nil {
		err = s.fits(ctx, h)
	}
	if errors.Is(err, ErrStreamRewritten) {
		return 0, err
	}
	if err != nil {
		s.log().Warn("snapshot ignored: replaying the whole stream", "err", err)
		return 0, nil
	}
	s.Table.install(img, h.Seq)
	s.mark(h.Seq)
	s.lastSaved.Store(h.Seq)
	s.newest.Store(&h)
	s.log().Info("projections restored from a snapshot", "seq", h.Seq, "keys", h.Keys, "took", time.Since(start))
	return h.Seq, nil
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
		return fmt.Errorf("%w (seq %d: %s)", ErrStreamRewritten, h.Seq, map[bool]string{true: "missing", false: "another event"}[got == ""])
	}
	return nil
}

// Apply starts a snapshot after every Every events. It may run on a
// command's goroutine (Runner.Offer), so it only notes that one is due: the
// copy of the table, as of whatever sequence it then stands at, the
// encoding and the upload all run in the background.
func (s *Snapshotter) Apply(e domain.Event) error {
	defer s.mark(e.Seq)
	every := s.Every
	if every == 0 {
		every = 100000
	}
	if e.Data == nil || e.Seq-s.lastSaved.Load() < every || !s.saving.CompareAndSwap(false, true) {
		return nil
	}
	go func() {
		defer s.saving.Store(false)
		img, seq := s.Table.image()
		h := snapshotHeader{Version: SnapshotVersion, Seq: seq, Keys: img.rows.n, Taken: time.Now().UnixMicro()}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var err error
		h.SeqHash, err = s.Store.MsgHash(ctx, seq)
		cancel()
		if err == nil {
			err = s.save(h, img)
		}
		if err != nil {
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
	img, _ := s.Table.image()
	h := snapshotHeader{Version: SnapshotVersion, Seq: seq, SeqHash: seqHash, Keys: img.rows.n, Taken: time.Now().UnixMicro()}
	if err := s.save(h, img); err != nil {
		return err
	}
	s.lastSaved.Store(seq)
	s.newest.Store(&h)
	return nil
}

func (s *Snapshotter) save(h snapshotHeader, img *tableImage) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(encodeSnapshot(pw, h, img)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err := s.Store.Put(ctx, pr)
	pr.CloseWithError(err)
	return err
}
