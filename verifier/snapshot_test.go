package verifier_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/verifier"
)

// logBuffer keeps what a logger wrote, for tests that read it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readyVerifier is a service's verifier on the read-only subscriber
// credential, ready; opts.Logger is kept when set.
func readyVerifier(t *testing.T, env *natstest.Env, opts verifier.Options) *verifier.Verifier {
	t.Helper()
	v := newVerifier(t, env, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return v
}

// newVerifier is readyVerifier without waiting for it to be ready.
func newVerifier(t *testing.T, env *natstest.Env, opts verifier.Options) *verifier.Verifier {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env.Embedded.ClientURL(), nk, nats.CustomInboxPrefix(verifier.SubscriberInbox),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = natstest.Quiet()
	}
	if opts.Signers == nil {
		opts.Signers = env.Signers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := verifier.New(ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// saveSnapshot has an instance holding store's signing key build the
// projections from the stream and save a snapshot of them, as serve
// does, with extra applied to its table first (a forger's additions);
// it returns the snapshot's sequence.
func saveSnapshot(t *testing.T, env *natstest.Env, store *events.Store, extra ...domain.Event) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	table := projections.NewTable()
	runner := projections.NewRunner(store, natstest.Quiet(), table)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	seq := env.LastSeq(t)
	if err := runner.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	for _, e := range extra {
		if err := table.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := events.OpenSnapshots(ctx, env.JS, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := snaps.MsgHash(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&projections.Snapshotter{Store: snaps, Table: table, Logger: natstest.Quiet()}).SaveNow(seq, hash); err != nil {
		t.Fatal(err)
	}
	return seq
}

// snapshotHistory is keys in every state, a snapshot, and events after it.
type snapshotHistory struct {
	valid, revoked, rotatedOld, rotatedNew string // settled before the snapshot
	revokedAfter, createdAfter             string // changed after it
	snapshotSeq, lastSeq                   uint64
}

func (h snapshotHistory) secrets() []string {
	return []string{h.valid, h.revoked, h.rotatedOld, h.rotatedNew, h.revokedAfter, h.createdAfter}
}

func makeHistory(t *testing.T, env *natstest.Env, snapshot func() uint64) snapshotHistory {
	t.Helper()
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	by := domain.SystemPrincipal("test", "test")
	create := func(name string) domain.Issued {
		t.Helper()
		k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: name, Scopes: []string{"orders:read"}, By: by})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	var h snapshotHistory
	for i := range 20 { // the bulk of the history, which the snapshot saves replaying
		create("filler " + string(rune('a'+i)))
	}
	h.valid = create("valid").Secret
	revoked := create("revoked")
	if _, err := keys.Revoke(ctx, "acme", revoked.Key.ID, domain.RevokeKey{By: by}); err != nil {
		t.Fatal(err)
	}
	h.revoked = revoked.Secret
	rotated := create("rotated")
	r, err := keys.Rotate(ctx, "acme", rotated.Key.ID, domain.RotateKey{By: by})
	if err != nil {
		t.Fatal(err)
	}
	h.rotatedOld, h.rotatedNew = rotated.Secret, r.Secret
	later := create("revoked after the snapshot")
	h.revokedAfter = later.Secret

	h.snapshotSeq = snapshot()

	if _, err := keys.Revoke(ctx, "acme", later.Key.ID, domain.RevokeKey{By: by}); err != nil {
		t.Fatal(err)
	}
	h.createdAfter = create("created after the snapshot").Secret
	h.lastSeq = env.LastSeq(t)
	return h
}

// answers is what v says of each secret.
func answers(v *verifier.Verifier, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		r := v.Verify(s)
		out = append(out, r.Code+" "+r.Key.ID)
	}
	return out
}

func TestVerifierStartsFromASnapshot(t *testing.T) {
	env := natstest.StartListening(t)
	h := makeHistory(t, env, func() uint64 { return saveSnapshot(t, env, env.Store) })
	var logs logBuffer
	created := 0
	v := readyVerifier(t, env, verifier.Options{
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		OnCreated: func(verifier.Event) { created++ },
	})

	if got, want := v.StartedAfter(), h.snapshotSeq; got != want {
		t.Fatalf("StartedAfter() = %d, want the snapshot's %d (the stream holds %d)\n%s", got, want, h.lastSeq, logs.String())
	}
	if got, want := v.Applied(), h.lastSeq; got != want {
		t.Errorf("Applied() = %d, want %d", got, want)
	}
	if got, want := created, 1; got != want {
		t.Errorf("OnCreated ran %d times, want %d: only the creation after the snapshot is read from the stream", got, want)
	}
	if !strings.Contains(logs.String(), "started from a snapshot") {
		t.Errorf("no log line says it started from a snapshot:\n%s", logs.String())
	}
	for _, tc := range []struct {
		name, secret, want string
	}{
		{"Valid", h.valid, domain.VerifyValid},
		{"Revoked", h.revoked, domain.VerifyRevoked},
		{"RotatedAway", h.rotatedOld, domain.VerifyExpired},
		{"RotatedTo", h.rotatedNew, domain.VerifyValid},
		{"RevokedAfterTheSnapshot", h.revokedAfter, domain.VerifyRevoked},
		{"CreatedAfterTheSnapshot", h.createdAfter, domain.VerifyValid},
	} {
		if got := v.Verify(tc.secret).Code; got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}

	replayed := readyVerifier(t, env, verifier.Options{FullReplay: true})
	if got := replayed.StartedAfter(); got != 0 {
		t.Errorf("with FullReplay, StartedAfter() = %d, want 0", got)
	}
	if got, want := answers(v, h.secrets()), answers(replayed, h.secrets()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("from the snapshot:\n%s\nfull replay:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestVerifierRefusesASnapshotItCannotTrust: whoever holds the NATS
// service credential may write to the snapshot bucket. A snapshot signed
// by a key outside the trust set (holding a key it minted), or one whose
// bytes were changed after it was signed, is refused with a log line;
// the verifier replays the whole stream and answers as keyledger does.
func TestVerifierRefusesASnapshotItCannotTrust(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forge  func(t *testing.T, env *natstest.Env, minted domain.Event) uint64
		logged string
	}{
		{"SignedByAKeyOutsideTheTrustSet", func(t *testing.T, env *natstest.Env, minted domain.Event) uint64 {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			// The forger trusts the deployment's events: its table holds
			// them all, and the key it mints.
			forger, err := events.Attach(context.Background(), env.JS, events.Config{Logger: natstest.Quiet(), Signer: events.NewSigner(priv), Signers: env.Signers})
			if err != nil {
				t.Fatal(err)
			}
			return saveSnapshot(t, env, forger, minted)
		}, "not signed by a trusted keyledger instance"},
		{"ChangedAfterItWasSigned", func(t *testing.T, env *natstest.Env, _ domain.Event) uint64 {
			seq := saveSnapshot(t, env, env.Store)
			ctx := context.Background()
			obs, err := env.JS.ObjectStore(ctx, events.SnapshotBucket)
			if err != nil {
				t.Fatal(err)
			}
			info, err := obs.GetInfo(ctx, "projections")
			if err != nil {
				t.Fatal(err)
			}
			// One more chunk on the object's chunks: its metadata, and
			// signature, stay as they were.
			if _, err := env.JS.Publish(ctx, "$O."+events.SnapshotBucket+".C."+info.NUID, []byte("more keys")); err != nil {
				t.Fatal(err)
			}
			return seq
		}, "does not match its signed digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := natstest.StartListening(t)
			secret, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			minted, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "minted", Scopes: []string{domain.ScopeManage}, By: domain.SystemPrincipal("test", "test")}, time.Now(), 0, secret)
			if err != nil {
				t.Fatal(err)
			}
			minted.Trusted = true
			h := makeHistory(t, env, func() uint64 { return tc.forge(t, env, minted) })
			var logs logBuffer
			v := readyVerifier(t, env, verifier.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

			if got := v.StartedAfter(); got != 0 {
				t.Errorf("StartedAfter() = %d, want 0: the snapshot at %d is not to be trusted", got, h.snapshotSeq)
			}
			if !strings.Contains(logs.String(), tc.logged) || !strings.Contains(logs.String(), "replaying the whole stream") {
				t.Errorf("the log does not say the snapshot was refused (%q) and the stream replayed:\n%s", tc.logged, logs.String())
			}
			if got := v.Verify(secret).Code; got != domain.VerifyNotFound {
				t.Errorf("the key only the snapshot holds verifies %s, want NOT_FOUND", got)
			}
			replayed := readyVerifier(t, env, verifier.Options{FullReplay: true})
			if got, want := answers(v, h.secrets()), answers(replayed, h.secrets()); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("after refusing the snapshot:\n%s\nfull replay:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestVerifierRefusesToStartOnARewrittenStream: a snapshot the deployment
// signed, taken at an event the stream no longer holds, means the stream
// was truncated or written again. A replay would answer from the shorter
// history, where a revocation may be missing: the verifier does not
// start, says so, and answers Unavailable, as serve refuses to serve.
func TestVerifierRefusesToStartOnARewrittenStream(t *testing.T) {
	env := natstest.StartListening(t)
	k, err := (&domain.Keys{Store: env.Store}).Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal("test", "test")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	snaps, err := events.OpenSnapshots(ctx, env.JS, env.Store, 1)
	if err != nil {
		t.Fatal(err)
	}
	table := projections.NewTable()
	if err := (&projections.Snapshotter{Store: snaps, Table: table, Logger: natstest.Quiet()}).SaveNow(env.LastSeq(t), "the hash of an event of another stream"); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	v := newVerifier(t, env, verifier.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	eventually(t, "the verifier says it refuses to start", func() bool { return strings.Contains(logs.String(), "refusing to start") })
	if v.Ready() {
		t.Error("the verifier is ready on a stream rewritten under its signed snapshot")
	}
	if got := v.Verify(k.Secret).Code; got != verifier.Unavailable {
		t.Errorf("Verify = %s, want %s", got, verifier.Unavailable)
	}
}
