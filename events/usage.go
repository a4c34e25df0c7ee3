package events

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// UsageBucket is the key-value bucket where instances share when keys were
// last used. It is not the audit stream: uses are not events.
const UsageBucket = "KEYLEDGER_USAGE"

// UsageStore is the bucket: one entry per key, "<org>.<key id>" → the
// minute of its latest use (RFC 3339).
type UsageStore struct {
	kv jetstream.KeyValue
}

// OpenUsage creates the bucket when it is missing (an existing one is
// used as it is, unless it has fewer replicas than asked).
func OpenUsage(ctx context.Context, js jetstream.JetStream, replicas int) (*UsageStore, error) {
	kv, err := openKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      UsageBucket,
		Description: "keyledger: the minute each key was last used, merged across instances",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, err
	}
	return &UsageStore{kv: kv}, nil
}

// Flush writes each use. Values only move forward in practice: an instance
// writes a minute only once it is later than any it has seen in the bucket.
func (s *UsageStore) Flush(ctx context.Context, uses map[string]time.Time) error {
	for ref, at := range uses {
		if _, err := s.kv.PutString(ctx, strings.Replace(ref, "/", ".", 1), at.UTC().Format(time.RFC3339)); err != nil {
			return fmt.Errorf("flush key usage: %w", err)
		}
	}
	return nil
}

// Watch calls fn with every entry of the bucket, then with each update,
// until ctx ends.
func (s *UsageStore) Watch(ctx context.Context, fn func(org, id string, at time.Time)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch key usage: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch key usage: closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a delete
			}
			org, id, ok := strings.Cut(e.Key(), ".")
			at, err := time.Parse(time.RFC3339, string(e.Value()))
			if ok && err == nil {
				fn(org, id, at)
			}
		}
	}
}
