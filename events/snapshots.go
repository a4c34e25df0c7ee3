package events

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// SnapshotBucket is the object store bucket holding the newest snapshot of
// the projections. It is a cache: losing it only costs a full replay.
const SnapshotBucket = "KEYLEDGER_SNAPSHOTS"

// SnapshotStream is the stream behind the snapshot bucket: reading the
// snapshot is reading it.
const SnapshotStream = "OBJ_" + SnapshotBucket

const snapshotObject = "projections"

// Snapshots stores projection snapshots in a JetStream object store,
// signed: the object's SHA-256 digest, which the object store checks as
// the snapshot is read, is signed by the instance that took it, and a
// snapshot no trusted signer signed is never used. Anyone may write to the
// bucket who holds the NATS service credential; nobody without a signing
// key can make a start trust what they wrote.
type Snapshots struct {
	obs    jetstream.ObjectStore
	stream jetstream.Stream
	store  *Store
}

// snapshotSigningPrefix opens the signed bytes of a snapshot.
const snapshotSigningPrefix = "keyledger-snapshot-v1\n"

// Metadata keys of the snapshot object carrying its signature.
const (
	snapshotSigner    = "keyledger-signer"
	snapshotSignature = "keyledger-signature"
)

func signedSnapshot(info *jetstream.ObjectInfo) []byte {
	return []byte(snapshotSigningPrefix + info.Digest + "\n" + strconv.FormatUint(info.Size, 10))
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
	return &Snapshots{obs: obs, stream: s.stream, store: s}, nil
}

// ReadSnapshots opens the bucket to read the snapshot, never creating or
// changing it: what the read-only subscriber credential may do (a
// verifier's start). No bucket is no snapshot: Get answers nil, nil.
func ReadSnapshots(ctx context.Context, js jetstream.JetStream, s *Store) (*Snapshots, error) {
	obs, err := js.ObjectStore(ctx, SnapshotBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return &Snapshots{stream: s.stream, store: s}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", SnapshotBucket, err)
	}
	return &Snapshots{obs: obs, stream: s.stream, store: s}, nil
}

// Put replaces the snapshot, and signs it.
func (s *Snapshots) Put(ctx context.Context, r io.Reader) error {
	if s.obs == nil {
		return errors.New("no snapshot bucket: opened to read only")
	}
	signer := s.store.Signer()
	if signer == nil {
		return errors.New("no signing key: snapshots are not written")
	}
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: snapshotObject}, r)
	if err != nil {
		return err
	}
	return s.obs.UpdateMeta(ctx, snapshotObject, jetstream.ObjectMeta{Name: snapshotObject, Metadata: map[string]string{
		snapshotSigner:    signer.KeyID(),
		snapshotSignature: base64.StdEncoding.EncodeToString(signer.sign(signedSnapshot(info))),
	}})
}

// Get opens the snapshot; nil, nil when there is none, an error when no
// trusted signer signed it. The object store checks the digest signed as
// the snapshot is read: read it to its end before trusting it.
func (s *Snapshots) Get(ctx context.Context) (io.ReadCloser, error) {
	if s.obs == nil {
		return nil, nil
	}
	info, err := s.obs.GetInfo(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(info.Metadata[snapshotSignature])
	if err != nil || !s.store.Signers().verify(info.Metadata[snapshotSigner], 0, signedSnapshot(info), sig) {
		return nil, fmt.Errorf("the snapshot is not signed by a trusted keyledger instance (signer %q)", info.Metadata[snapshotSigner])
	}
	r, err := s.obs.Get(ctx, snapshotObject)
	if err != nil {
		return nil, err
	}
	if got, err := r.Info(); err != nil || got.Digest != info.Digest || got.Size != info.Size {
		r.Close()
		return nil, errors.New("the snapshot changed while it was opened")
	}
	return r, nil
}

// MsgHash is the stored hash of the stream's message at seq.
func (s *Snapshots) MsgHash(ctx context.Context, seq uint64) (string, error) {
	m, err := s.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return BodyHash(m.Data), nil
}
