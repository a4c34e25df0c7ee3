package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/verifier"
)

// verifierStart times a service's verifier (the verifier package) until it
// is ready, over the embedded server's loopback client port with the
// read-only subscriber credential, as a service connects: from the newest
// snapshot an instance signed, and by full replay, beside a raw ordered
// consumer on the same credential draining the same stream. The stream is
// the cold start's (the fixture's creations, signed, with checkpoints);
// the snapshot is taken as serve takes one, and a hundredth as many
// creations again are appended after it, checkpointed as serve does every
// minute, for the verifier to follow.
func verifierStart(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := len(f.created)
	ss, err := newSignedStream(ctx, filepath.Join(o.Dir, "verifier"), "127.0.0.1:0", f.created)
	if err != nil {
		return nil, err
	}
	defer ss.emb.Close()
	emb, js, writer := ss.emb, ss.js, ss.writer

	// The service's connection.
	nk, err := nats.NkeyOptionFromSeed(emb.Credentials.Subscriber)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(emb.ClientURL(), nk, nats.CustomInboxPrefix(verifier.SubscriberInbox),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // its refused consumer deletes
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sjs, _ := jetstream.NewWithDomain(nc, events.SubscriberDomain)
	total, err := writer.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	drain, err := rawDrain(ctx, sjs, total)
	if err != nil {
		return nil, err
	}
	replay, _, err := verifierReady(ctx, sjs, writer.Signers(), true, quiet)
	if err != nil {
		return nil, err
	}

	// An instance of the deployment replays the stream and saves a
	// snapshot; then the stream moves on.
	snapSeq, err := saveSnapshot(ctx, js, writer, quiet)
	if err != nil {
		return nil, err
	}
	tail, tailSecret, err := tailCreations(max(n/100, 10))
	if err != nil {
		return nil, err
	}
	// Serve checkpoints them within the minute: the verifier compares
	// their hashes with the signed ones rather than check each signature.
	if err := ss.fill(ctx, tail); err != nil {
		return nil, err
	}
	fromSnapshot, v, err := verifierReady(ctx, sjs, writer.Signers(), false, quiet)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	read, err := snapshotRead(ctx, sjs, writer.Signers(), quiet)
	if err != nil {
		return nil, err
	}
	if got := v.StartedAfter(); got != snapSeq {
		return nil, fmt.Errorf("the verifier started after seq %d, not from the snapshot at %d", got, snapSeq)
	}
	// Key 1 is one of the fixture's not rotated: its secret is in the stream.
	for _, s := range []string{f.secrets[1], tailSecret} {
		if res := v.Verify(s); !res.Valid() {
			return nil, fmt.Errorf("a key verifies %s in the verifier started from the snapshot", res.Code)
		}
	}

	keys := count(float64(n))
	return []Row{
		{Scenario: fmt.Sprintf("verifier start, %s keys, subscriber credential: from the signed snapshot, then %s events after it", keys, count(float64(len(tail)))),
			Figure: fmt.Sprintf("%s (reading and installing the snapshot alone: %s)", dur(fromSnapshot), dur(read)), Baseline: "raw drain: " + dur(drain), Ratio: float64(fromSnapshot) / float64(drain),
			Target: perMillion(2*time.Second, n), Met: fromSnapshot <= scaled(2*time.Second, n)},
		{Scenario: fmt.Sprintf("verifier start, %s keys, subscriber credential: full replay (FullReplay, or no snapshot to trust)", keys),
			Figure:   fmt.Sprintf("%s (%s events/s)", dur(replay), count(rate(int(total), replay))),
			Baseline: fmt.Sprintf("raw drain: %s (%s events/s)", dur(drain), count(rate(int(total), drain))),
			Ratio:    float64(replay) / float64(drain), Target: "(for comparison)", Met: true},
	}, nil
}

// saveSnapshot has an instance of the deployment replay the stream and
// save a snapshot of its projections, as serve does, and returns its
// sequence.
func saveSnapshot(ctx context.Context, js jetstream.JetStream, store *events.Store, log *slog.Logger) (uint64, error) {
	_, table, err := readyIn(ctx, store, log, nil)
	if err != nil {
		return 0, err
	}
	snaps, err := events.OpenSnapshots(ctx, js, store, 1)
	if err != nil {
		return 0, err
	}
	seq := table.LastSeq()
	hash, err := snaps.MsgHash(ctx, seq)
	if err != nil {
		return 0, err
	}
	return seq, (&projections.Snapshotter{Store: snaps, Table: table, Logger: log}).SaveNow(seq, hash)
}

// snapshotRead times reading the snapshot into a table, as the verifier
// does before it follows the stream, on the subscriber's connection.
func snapshotRead(ctx context.Context, js jetstream.JetStream, signers *events.Signers, log *slog.Logger) (time.Duration, error) {
	start := time.Now()
	store, err := events.Attach(ctx, js, events.Config{Logger: log, Signers: signers, ReadOnly: true})
	if err != nil {
		return 0, err
	}
	snaps, err := events.ReadSnapshots(ctx, js, store)
	if err != nil {
		return 0, err
	}
	seq, err := (&projections.Snapshotter{Store: snaps, Table: projections.NewTable(), Logger: log}).Restore(ctx)
	if err == nil && seq == 0 {
		err = errors.New("the snapshot was not read")
	}
	return time.Since(start), err
}

// rawDrain reads every message of the stream as the read-only
// credential may, and as the verifier follows it: batches of direct gets
// by sequence (the credential makes no consumer), with nothing decoded.
func rawDrain(ctx context.Context, js jetstream.JetStream, total uint64) (time.Duration, error) {
	start := time.Now()
	nc := js.Conn()
	subject := "$JS." + js.Options().Domain + ".API.DIRECT.GET." + events.StreamName
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for next := uint64(1); next <= total; {
		req, _ := json.Marshal(map[string]any{"seq": next, "batch": 256})
		if err := nc.PublishRequest(subject, sub.Subject, req); err != nil {
			return 0, err
		}
		from := next
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return 0, err
			}
			if m.Header.Get(jetstream.SequenceHeader) == "" {
				if status := m.Header.Get("Status"); status != "204" {
					return 0, fmt.Errorf("raw drain at %d: %s %s", next, status, m.Header.Get("Description"))
				}
				break // the end of the batch
			}
			next++
		}
		if next == from {
			return 0, fmt.Errorf("raw drain: nothing at %d of %d", next, total)
		}
	}
	return time.Since(start), nil
}

// verifierReady starts a verifier and returns how long until it was
// ready; it is returned running unless full.
func verifierReady(ctx context.Context, js jetstream.JetStream, signers *events.Signers, full bool, log *slog.Logger) (time.Duration, *verifier.Verifier, error) {
	start := time.Now()
	v, err := verifier.New(ctx, js, verifier.Options{Signers: signers, FullReplay: full, Logger: log})
	if err != nil {
		return 0, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := v.WaitReady(wctx); err != nil {
		v.Close()
		return 0, nil, fmt.Errorf("verifier not ready: %w", err)
	}
	took := time.Since(start)
	if full {
		v.Close()
		v = nil
	}
	return took, v, nil
}

// tailCreations are n keys created after the snapshot, and one's secret.
func tailCreations(n int) ([]domain.Event, string, error) {
	out := make([]domain.Event, n)
	var secret string
	now := time.Now().UTC()
	for i := range out {
		s, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
		if err != nil {
			return nil, "", err
		}
		org := fmt.Sprintf("org-%d", i%100)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: fmt.Sprintf("new key %d", i), Scopes: fixtureScopeSet(i), By: fixtureActor(i, org)}, now, 0, s)
		if err != nil {
			return nil, "", err
		}
		out[i], secret = e, s
	}
	return out, secret, nil
}
