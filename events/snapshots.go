package events

import (
	"context"
	"errors"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// SnapshotBucket is the object store bucket holding the newest snapshot of
// the projections. It is a cache: losing it only costs a full replay.
const SnapshotBucket = "KEYLEDGER_SNAPSHOTS"

const snapshotObject = "projections"

// Snapshots stores projection snapshots in a JetStream object store.
type Snapshots struct {
	obs    jetstream.ObjectStore
	stream jetstream.Stream
}

// OpenSnapshots creates the bucket when it is missing (an existing one is
// used as it is, unless it has fewer replicas than asked).
func OpenSnapshots(ctx context.Context, js jetstream.JetStream, s *Store, replicas int) (*Snapshots, error) {
	obs, err := openObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotBucket,
		Description: "keyledger: the newest snapshot of the projections (a cache of the stream)",
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		Compression: false, // already s2-compressed
	})
	if err != nil {
		return nil, err
	}
	return &Snapshots{obs: obs, stream: s.stream}, nil
}

// Put replaces the snapshot.
func (s *Snapshots) Put(ctx context.Context, r io.Reader) error {
	_, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: snapshotObject}, r)
	return err
}

// Get opens the snapshot; nil, nil when there is none. The object store
// checks its digest as it is read.
func (s *Snapshots) Get(ctx context.Context) (io.ReadCloser, error) {
	r, err := s.obs.Get(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	return r, err
}

// MsgHash is the stored hash of the stream's message at seq.
func (s *Snapshots) MsgHash(ctx context.Context, seq uint64) (string, error) {
	m, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return "", err
	}
	return BodyHash(m.Data), nil
}
