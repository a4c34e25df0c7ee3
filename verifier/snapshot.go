package verifier

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

// startFromSnapshot loads the newest snapshot into the index, as a
// keyledger instance restores one at start, and has the runner resume
// after it. The snapshot counts only once its signature, by a key of the
// trust set, holds over its digest, its size and this very trust set, and
// the digest has been checked over the whole snapshot before it is
// decoded; a snapshot that is missing, unsigned, signed by anyone else or
// under another trust set, corrupt or of another version is logged and
// the whole stream is replayed instead: it is never trusted. It returns false
// when the verifier must not start at all: a snapshot that a trusted
// signer took at an event the stream no longer holds means the stream was
// truncated or written again, and a replay would answer from the shorter
// history, where a revocation may be missing. Verify then answers
// Unavailable, as it does once a running verifier sees the stream go
// backwards.
func (v *Verifier) startFromSnapshot(ctx context.Context, js jetstream.JetStream, store *events.Store, log *slog.Logger) bool {
	snaps, err := events.ReadSnapshots(ctx, js, store)
	if err != nil {
		log.Warn("verifier: cannot open the snapshot bucket: replaying the whole stream", "bucket", events.SnapshotBucket, "err", err)
		return true
	}
	// Restore logs, and answers 0 for, any snapshot it does not take; its
	// only error is the stream rewritten.
	from, err := (&projections.Snapshotter{Store: snaps, Table: v.index.Table(), Logger: log}).Restore(ctx)
	if err != nil {
		log.Error("verifier: refusing to start, it answers Unavailable: "+err.Error()+" (restart once the stream is known to be right; if it was restored on purpose, delete the snapshot bucket)", "bucket", events.SnapshotBucket)
		return false
	}
	if from > 0 {
		v.runner.ResumeAfter(from)
		v.from.Store(from)
		log.Info("verifier: started from a snapshot; following the stream after it", "seq", from)
	}
	return true
}
