package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is how keyledger creates the stream: file storage, kept
// for ever, no message ever deleted or purged.
func streamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "keyledger: every change to every API key; the only source of truth",
		Subjects:    []string{SubjectRoot + ".>", CheckpointSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}
}

// unsafeStream lists what makes an existing stream unfit to hold the
// history, or returns nil. It judges only what could lose or let others
// remove events, never a setting that is merely different.
func unsafeStream(have, want jetstream.StreamConfig) error {
	var why []string
	if have.Replicas < want.Replicas {
		why = append(why, fmt.Sprintf("it has %d replicas, fewer than the %d asked with --stream-replicas (raise them with `nats stream edit %s --replicas %d`, or ask for %d)",
			have.Replicas, want.Replicas, have.Name, want.Replicas, have.Replicas))
	}
	if !have.DenyDelete {
		why = append(why, "it allows deleting messages (deny_delete is off)")
	}
	if !have.DenyPurge {
		why = append(why, "it allows purging (deny_purge is off)")
	}
	if have.Retention != jetstream.LimitsPolicy {
		why = append(why, fmt.Sprintf("its retention is %s, which drops events once consumed (it must be limits)", have.Retention))
	}
	if have.MaxAge > 0 {
		why = append(why, fmt.Sprintf("its max age %s drops old events", have.MaxAge))
	}
	if have.MaxMsgs > 0 || have.MaxBytes > 0 || have.MaxMsgsPerSubject > 0 {
		why = append(why, fmt.Sprintf("its limits (max msgs %d, max bytes %d, max msgs per subject %d) drop old events", have.MaxMsgs, have.MaxBytes, have.MaxMsgsPerSubject))
	}
	if have.Storage != jetstream.FileStorage {
		why = append(why, "it keeps events in memory only, lost when the servers restart")
	}
	if have.Sealed || have.Mirror != nil || have.NoAck {
		why = append(why, "it is sealed, a mirror, or does not acknowledge writes")
	}
	// A transform stores events under other subjects than a key's are read
	// by; sources pour another stream's messages in; a counter stream
	// refuses plain appends.
	if have.SubjectTransform != nil || len(have.Sources) > 0 || have.AllowMsgCounter {
		why = append(why, "it transforms its subjects, takes messages from other streams (sources), or is a counter stream")
	}
	for _, s := range want.Subjects {
		if !slices.Contains(have.Subjects, s) {
			why = append(why, fmt.Sprintf("it does not take the subject %s", s))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return unfit("stream %s is not safe to keep the history in: %s; keyledger never changes an existing stream, fix it with the nats CLI",
		have.Name, strings.Join(why, "; "))
}

// openStream creates the stream when it is missing, and otherwise only
// checks it: an existing stream's settings are the operator's, and are
// never loosened (no lower replicas, no deletes) nor overwritten.
func openStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	want := streamConfig(replicas)
	stream, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another instance made it first
			stream, err = js.Stream(ctx, StreamName)
		} else if err == nil {
			return stream, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", StreamName, err)
	}
	if err := unsafeStream(stream.CachedInfo().Config, want); err != nil {
		return nil, err
	}
	return stream, nil
}

// backingStream names the stream behind a key-value or object store bucket.
func backingStream(prefix, bucket string) string { return prefix + bucket }

// checkBucketReplicas refuses a bucket that exists with fewer replicas
// than asked; like the stream, an existing bucket is never changed.
func checkBucketReplicas(ctx context.Context, js jetstream.JetStream, stream, bucket string, replicas int) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if have := s.CachedInfo().Config.Replicas; have < replicas {
		return unfit("bucket %s has %d replicas, fewer than the %d asked with --stream-replicas (raise them with `nats stream edit %s --replicas %d`, or ask for %d); keyledger never changes an existing bucket",
			bucket, have, replicas, stream, replicas, have)
	}
	return nil
}

// openKeyValue creates the bucket when it is missing, and otherwise checks
// its replicas and uses it as it is.
func openKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		} else if err == nil {
			return kv, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	if err := checkBucketReplicas(ctx, js, backingStream("KV_", cfg.Bucket), cfg.Bucket, cfg.Replicas); err != nil {
		return nil, err
	}
	return kv, nil
}

// openObjectStore is openKeyValue for an object store bucket.
func openObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = js.ObjectStore(ctx, cfg.Bucket)
		} else if err == nil {
			return obs, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	if err := checkBucketReplicas(ctx, js, backingStream("OBJ_", cfg.Bucket), cfg.Bucket, cfg.Replicas); err != nil {
		return nil, err
	}
	return obs, nil
}
