package events

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
	obs   jetstream.ObjectStore
	store *Store
}

// snapshotSigningPrefix opens the signed bytes of a snapshot. Version 2
// signs the trust set too: v1 snapshots are refused (a replay, once).
const snapshotSigningPrefix = "keyledger-snapshot-v2\n"

// Metadata keys of the snapshot object carrying its signature.
const (
	snapshotSigner    = "keyledger-signer"
	snapshotSignature = "keyledger-signature"
)

// signedSnapshot is what a snapshot's signature covers: its digest and
// size, and the trust set its table was judged under. A snapshot holds
// verdicts, not events: one taken before a key was retired holds what
// that key signed after its retirement as trusted, so it counts only
// where the trust set is the very one it was judged under (SECURITY.md,
// Scale); under any other, the stream is replayed.
func signedSnapshot(info *jetstream.ObjectInfo, trust *Signers) []byte {
	set := sha256.Sum256(trust.PEM())
	return []byte(snapshotSigningPrefix + info.Digest + "\n" + strconv.FormatUint(info.Size, 10) + "\n" + hex.EncodeToString(set[:]))
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
	return &Snapshots{obs: obs, store: s}, nil
}

// ReadSnapshots opens the bucket to read the snapshot, never creating or
// changing it: what the read-only subscriber credential may do (a
// verifier's start). No bucket is no snapshot: Get answers nil, nil.
func ReadSnapshots(ctx context.Context, js jetstream.JetStream, s *Store) (*Snapshots, error) {
	obs, err := js.ObjectStore(ctx, SnapshotBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return &Snapshots{store: s}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", SnapshotBucket, err)
	}
	return &Snapshots{obs: obs, store: s}, nil
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
	trust := s.store.Signers() // the table's: it is judged again, before this changes, on a reload
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: snapshotObject}, r)
	if err != nil {
		return err
	}
	return s.obs.UpdateMeta(ctx, snapshotObject, jetstream.ObjectMeta{Name: snapshotObject, Metadata: map[string]string{
		snapshotSigner:    signer.KeyID(),
		snapshotSignature: base64.StdEncoding.EncodeToString(signer.sign(signedSnapshot(info, trust))),
	}})
}

// Get opens the snapshot; nil, nil when there is none, an error when no
// trusted signer signed it or its bytes are not the ones signed. It reads
// the chunks itself, by direct gets, at most the signed size, and checks
// the signed digest before it hands out a byte: nats.go's reader checks it
// only at the end, so a decoder would first parse (and hold) whatever
// chunks the metadata names, and its ordered push consumer needs a
// consumer-create permission that lets a reader deliver the bucket into
// other subjects (SECURITY.md, Scale). The snapshot is s2-compressed, so
// the buffer is a fraction of the table it restores.
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
	if trust := s.store.Signers(); err != nil || !trust.verify(info.Metadata[snapshotSigner], 0, signedSnapshot(info, trust), sig) {
		return nil, fmt.Errorf("the snapshot is not signed by a trusted keyledger instance under this trust set (signer %q; one taken under another trust set holds its verdicts)", info.Metadata[snapshotSigner])
	}
	body, err := s.readChunks(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("the snapshot does not match its signed digest: %w", err)
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// readChunks reads the object's chunks, refusing more than its signed size
// or bytes of another digest.
func (s *Snapshots) readChunks(ctx context.Context, info *jetstream.ObjectInfo) ([]byte, error) {
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, err
	}
	if info.Opts != nil && info.Opts.Link != nil || info.NUID == "" {
		return nil, errors.New("the snapshot's metadata is a link, or names no chunks")
	}
	if info.Size > maxSnapshotSize {
		return nil, fmt.Errorf("the snapshot's signed size %d is over %d", info.Size, uint64(maxSnapshotSize))
	}
	subject := "$O." + SnapshotBucket + ".C." + info.NUID
	body := make([]byte, 0, info.Size)
	seq := uint64(1)
	// The chunks are read in batches (a request a few MB, not one a
	// chunk), with the server's own sequences (directGetIn takes the
	// server's headers, never a chunk publisher's, and refuses a batch
	// out of order).
	for uint64(len(body)) < info.Size {
		msgs, _, err := s.store.directGetIn(ctx, SnapshotStream, subject, seq, snapshotBatch)
		if err == nil && len(msgs) == 0 {
			err = errors.New("no more chunks")
		}
		if err != nil {
			return nil, fmt.Errorf("chunk after %d of %d bytes: %w", len(body), info.Size, err)
		}
		for _, m := range msgs {
			if len(m.Data) == 0 {
				return nil, fmt.Errorf("an empty chunk at sequence %d", m.Seq)
			}
			if uint64(len(body))+uint64(len(m.Data)) > info.Size {
				return nil, fmt.Errorf("its chunks hold more than its signed size %d", info.Size)
			}
			body, seq = append(body, m.Data...), m.Seq+1
		}
	}
	// Chunks beyond the signed size were written after it was signed: the
	// object is not the one signed, even if its first bytes are.
	if more, _, err := s.store.directGetIn(ctx, SnapshotStream, subject, seq, 1); err != nil || len(more) > 0 {
		return nil, fmt.Errorf("its chunks hold more than its signed size %d (%v)", info.Size, err)
	}
	if got := sha256.Sum256(body); !bytes.Equal(got[:], want) {
		return nil, jetstream.ErrDigestMismatch
	}
	return body, nil
}

// snapshotBatch is how many chunks one direct get asks for (128 KiB
// each; the answer stops at directMaxBytes).
const snapshotBatch = 64

// maxSnapshotSize bounds the snapshot Get reads: a signed size is a trusted
// instance's, but a bound keeps a mistake from taking the memory.
const maxSnapshotSize = 8 << 30

// MsgHash is the stored hash of the stream's message at seq, "" when the
// stream holds none there. It asks the stream's leader: any replica
// answers a direct get, and a follower that has not yet stored the event
// a snapshot was just taken at would answer "none", which a start takes
// for a rewritten stream.
func (s *Snapshots) MsgHash(ctx context.Context, seq uint64) (string, error) {
	m, ok, err := s.store.Msg(ctx, seq)
	if err != nil || !ok {
		return "", err
	}
	return BodyHash(m.Data), nil
}
