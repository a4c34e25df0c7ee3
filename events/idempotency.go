package events

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IdempotencyBucket is the key-value bucket where instances share the
// answers to writes that carried an Idempotency-Key, so that a retry on
// any instance gets the first answer. What the HTTP layer puts there is
// sealed with a key only the caller's credential gives (http/idempotency.go):
// the bucket holds nothing a reader of NATS could use.
const IdempotencyBucket = "KEYLEDGER_IDEMPOTENCY"

// IdempotencyTTL is how long an entry lives after its last write.
const IdempotencyTTL = 24 * time.Hour

// Idempotency is the bucket. Entries are named by the caller and hold
// opaque bytes; each write states the revision it replaces, so that two
// instances never both take one entry.
type Idempotency struct {
	kv jetstream.KeyValue
}

// OpenIdempotency opens the bucket, creating it only when it is missing:
// an operator's settings of an existing bucket are left as they are,
// unless it has fewer replicas than asked.
func OpenIdempotency(ctx context.Context, js jetstream.JetStream, replicas int) (*Idempotency, error) {
	kv, err := openKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      IdempotencyBucket,
		Description: "keyledger: answers to writes with an Idempotency-Key, sealed per credential, for 24 hours",
		History:     1,
		TTL:         IdempotencyTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, err
	}
	return &Idempotency{kv: kv}, nil
}

// Claim creates the entry name holding value, unless it exists: then ok
// is false and nothing changes.
func (s *Idempotency) Claim(ctx context.Context, name string, value []byte) (rev uint64, ok bool, err error) {
	rev, err = s.kv.Create(ctx, name, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

// Get returns the entry's value and revision; nil when there is none.
func (s *Idempotency) Get(ctx context.Context, name string) (value []byte, rev uint64, err error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// Replace sets the entry to value if it is still at revision rev; ok is
// false when another write came first.
func (s *Idempotency) Replace(ctx context.Context, name string, value []byte, rev uint64) (uint64, bool, error) {
	next, err := s.kv.Update(ctx, name, value, rev)
	if stale(err) {
		return 0, false, nil
	}
	return next, err == nil, err
}

// Release deletes the entry if it is still at revision rev; if another
// write came first, it leaves the entry to it.
func (s *Idempotency) Release(ctx context.Context, name string, rev uint64) error {
	if err := s.kv.Delete(ctx, name, jetstream.LastRevision(rev)); !stale(err) {
		return err
	}
	return nil
}

func stale(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) || IsConflict(err)
}
