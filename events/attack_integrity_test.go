package events_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// follow runs projections on store, as an instance starting now would,
// and returns them once they have caught up.
func follow(t *testing.T, store *events.Store) (*projections.Table, *projections.Runner) {
	t.Helper()
	table := projections.NewTable()
	runner := projections.NewRunner(store, natstest.Quiet(), table)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = runner.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := runner.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return table, runner
}

// forge publishes an event as anyone holding the NATS service credential
// can: encoded as keyledger encodes it, signed as sign says.
func forge(t *testing.T, env *natstest.Env, e domain.Event, sign func(*nats.Msg)) uint64 {
	t.Helper()
	body, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: events.Subject(e.OrgID, e.KeyID, e.Type), Data: body}
	if sign != nil {
		sign(m)
	}
	ack, err := env.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestAttackForgedEventsNeverCount publishes, with the service credential,
// a KeyCreated of a key whose secret the attacker chose, unsigned and
// signed by a key outside the trust set, and a KeyRevoked of the real
// admin key signed by nobody: none is applied, none shows in the history,
// the next checkpoint does not vouch for them, and the audit names each.
func TestAttackForgedEventsNeverCount(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	admin, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "admin", Scopes: []string{domain.ScopeManage}, By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	attacker, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	minted, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "totally legit", Scopes: []string{domain.ScopeManage}, By: asSystem}, time.Now(), 0, attacker)
	if err != nil {
		t.Fatal(err)
	}
	stranger := newSigner(t)
	forgedSeqs := []uint64{forge(t, env, minted, nil)}
	again := minted
	again.ID, again.KeyID = domain.NewEventID(), domain.NewKeyID()
	forgedSeqs = append(forgedSeqs, forge(t, env, again, stranger.SignEvent))
	revoke := domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyRevoked, SchemaVersion: 1, OrgID: "acme", KeyID: admin.Key.ID,
		OccurredAt: time.Now(), Actor: system, Data: domain.KeyRevoked{Reason: "forged"}, PrevHash: admin.Key.LastHash}
	forgedSeqs = append(forgedSeqs, forge(t, env, revoke, func(m *nats.Msg) {
		// The real signer's name, on a signature of something else.
		env.Signer.SignEvent(&nats.Msg{Subject: m.Subject, Data: []byte("another body"), Header: m.Header})
	}))

	// A fresh instance of the deployment, and a verifier's view.
	table, runner := follow(t, env.Store)
	now := time.Now()
	for _, secret := range []string{attacker} {
		if got := table.Index().Verify(secret, now).Code; got != domain.VerifyNotFound {
			t.Errorf("the attacker's secret verifies %s, want NOT_FOUND", got)
		}
	}
	if got := table.Index().Verify(admin.Secret, now).Code; got != domain.VerifyValid {
		t.Errorf("the admin key verifies %s after a forged revocation, want VALID", got)
	}
	if got := runner.Rejected(); got != uint64(len(forgedSeqs)) {
		t.Errorf("refused %d events, want %d", got, len(forgedSeqs))
	}
	for _, seq := range forgedSeqs {
		if trusted, known := table.Judged(seq); trusted || !known {
			t.Errorf("Judged(%d) = %v, %v; want refused", seq, trusted, known)
		}
	}
	// The history, as served, does not hold them.
	env.Store.UseVerdicts(table)
	if evs, err := env.Store.Load(ctx, "acme", minted.KeyID); err != nil || len(evs) != 0 {
		t.Errorf("the forged key's history: %v, %v; want none", evs, err)
	}
	if evs, err := env.Store.Load(ctx, "acme", admin.Key.ID); err != nil || len(evs) != 1 {
		t.Errorf("the admin key's history holds %d events (%v), want its creation only", len(evs), err)
	}
	// The admin can still be rotated: the forgery neither chains nor blocks.
	rotated, err := keys.Rotate(ctx, "acme", admin.Key.ID, domain.RotateKey{By: asSystem})
	if err != nil {
		t.Fatalf("rotating the admin key after a forgery on its subject: %v", err)
	}
	if rotated.Key.Revoked {
		t.Error("the forged revocation was applied to the command's state")
	}

	// The next checkpoint lists them as not vouched for; the audit names them.
	if _, _, err := (&events.Checkpointer{Store: env.Store}).Once(ctx); err != nil {
		t.Fatal(err)
	}
	r := audit(t, env.Store, env.Signers, nil)
	if r.Finding != nil || len(r.Forged) != len(forgedSeqs) {
		t.Fatalf("audit: finding %v, forged %v; want exactly the %d forgeries", r.Finding, r.Forged, len(forgedSeqs))
	}
	for i, f := range r.Forged {
		if f.Seq != forgedSeqs[i] {
			t.Errorf("forged[%d] at seq %d, want %d", i, f.Seq, forgedSeqs[i])
		}
	}
	// A replay through that checkpoint refuses them by its list alone.
	table2, runner2 := follow(t, env.Store)
	if got := table2.Index().Verify(attacker, now).Code; got != domain.VerifyNotFound || runner2.Rejected() != uint64(len(forgedSeqs)) {
		t.Errorf("a replay through the checkpoint: attacker %s, %d refused", got, runner2.Rejected())
	}
}

// TestAttackJunkCheckpointDoesNotStopSigning publishes what stopped every
// later checkpoint: an unsigned message on the checkpoint subject claiming
// to cover the stream up to 18446744073709551000. It is skipped, counted
// and reported, and checkpoints go on.
func TestAttackJunkCheckpointDoesNotStopSigning(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	cp := &events.Checkpointer{Store: env.Store}
	create := func() {
		if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem}); err != nil {
			t.Fatal(err)
		}
	}
	create()
	if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
		t.Fatalf("first checkpoint: %v %v", wrote, err)
	}
	junk, err := env.JS.Publish(ctx, events.CheckpointSubject, []byte(`{"version":2,"from_seq":0,"to_seq":18446744073709551000}`))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		create()
	}
	// Another instance, started after the junk: it must find the signed
	// checkpoint behind it.
	later := &events.Checkpointer{Store: env.Store}
	if wrote, _, err := later.Once(ctx); err != nil || !wrote {
		t.Fatalf("a checkpoint after the junk: %v %v", wrote, err)
	}
	if later.Rejected() != 1 {
		t.Errorf("the junk was counted %d times, want once", later.Rejected())
	}
	head, ok, err := later.Head(ctx)
	if err != nil || !ok || head.ToSeq != env.LastSeq(t)-1 {
		t.Errorf("head %+v %v %v; want the checkpoint over every event", head, ok, err)
	}
	r := audit(t, env.Store, env.Signers, nil)
	if r.Finding != nil || len(r.Forged) != 1 || r.Forged[0].Seq != junk.Sequence || r.Checkpoints != 2 {
		t.Errorf("audit: finding %v, forged %v, %d checkpoints; want the junk named and 2 signed checkpoints", r.Finding, r.Forged, r.Checkpoints)
	}
}

// TestAuditNeverCriesWolf replays what raised a false alarm: bursts far
// larger than one checkpoint between two runs of the checkpointer, at its
// production size, and checkpoints from two instances (two signing keys of
// one trust set) interleaved. An untouched stream verifies intact.
func TestAuditNeverCriesWolf(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 events: not in -short")
	}
	env := natstest.Start(t)
	ctx := context.Background()
	other := newSigner(t)
	set, err := env.Signers.With(other.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Store.SetSigners(set); err != nil {
		t.Fatal(err)
	}
	b, err := events.Attach(ctx, env.JS, events.Config{Logger: natstest.Quiet(), Signer: other, Signers: set})
	if err != nil {
		t.Fatal(err)
	}
	cpA, cpB := &events.Checkpointer{Store: env.Store}, &events.Checkpointer{Store: b}
	burst := func(store *events.Store, n int) {
		keys := &domain.Keys{Store: store}
		for range n {
			if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "burst", By: asSystem}); err != nil {
				t.Fatal(err)
			}
		}
	}
	catchUp := func(cp *events.Checkpointer) {
		for more := true; more; {
			if _, more, err = cp.Once(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	burst(env.Store, 10000)
	catchUp(cpA)
	burst(b, 5000)
	burst(env.Store, 5000)
	catchUp(cpB)
	burst(env.Store, 10)
	r := audit(t, env.Store, set, nil)
	if !r.Intact() || r.Events != 20010 || r.SignedUpTo == 0 || r.Checkpoints < 5 {
		t.Errorf("audit after bursts of 10,000: finding %v, forged %d, %d events, %d checkpoints, signed up to %d",
			r.Finding, len(r.Forged), r.Events, r.Checkpoints, r.SignedUpTo)
	}
	if r.Head == nil || r.Head.KeyID != other.KeyID() || len(r.Signers) != 2 {
		t.Errorf("head %+v, signers %v; want the second instance's checkpoint last and both keys' events", r.Head, r.Signers)
	}
}

// legacyCheckpoint is a checkpoint as the release before signing wrote
// it: its fields in this order, signed over their JSON.
type legacyCheckpoint struct {
	Version        int               `json:"version"`
	FromSeq        uint64            `json:"from_seq"`
	ToSeq          uint64            `json:"to_seq"`
	Events         []events.EventRef `json:"events"`
	Chain          string            `json:"chain"`
	PrevCheckpoint string            `json:"prev_checkpoint"`
	SignedAt       string            `json:"signed_at"`
	KeyID          string            `json:"key_id"`
	Signature      string            `json:"signature"`
}

// previousRelease writes a store as the release before signing did:
// unsigned events chained by prev_hash, then a version 1 checkpoint over
// them signed with the audit key, then (when tail) more unsigned events
// after it, as a crash before the last checkpoint leaves them.
func previousRelease(t *testing.T, env *natstest.Env, audit ed25519.PrivateKey, tail bool) (secrets []string) {
	t.Helper()
	ctx := context.Background()
	var cp legacyCheckpoint
	cp.Version = 1
	publish := func(e domain.Event) {
		body, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := env.JS.Publish(ctx, events.Subject(e.OrgID, e.KeyID, e.Type), body)
		if err != nil {
			t.Fatal(err)
		}
		h := events.BodyHash(body)
		cp.Events = append(cp.Events, events.EventRef{Seq: ack.Sequence, Hash: h})
		cp.Chain = events.ChainNext(cp.Chain, ack.Sequence, h)
		cp.ToSeq = ack.Sequence
	}
	mint := func() {
		s, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "from before", Scopes: []string{domain.ScopeManage}, By: asSystem}, time.Now(), 0, s)
		if err != nil {
			t.Fatal(err)
		}
		publish(e)
		secrets = append(secrets, s)
	}
	for range 3 {
		mint()
	}
	cp.SignedAt = events.FormatTime(time.Now())
	cp.KeyID = events.KeyID(audit.Public().(ed25519.PublicKey))
	signed, _ := json.Marshal(cp)
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(audit, signed))
	body, _ := json.Marshal(cp)
	if _, err := env.JS.Publish(ctx, events.CheckpointSubject, body); err != nil {
		t.Fatal(err)
	}
	if tail {
		mint()
	}
	return secrets
}

// TestStoreOfThePreviousReleaseKeepsWorking opens a store the release
// before signing wrote, with the same key as signing key: the events a
// version 1 checkpoint covers count, and no others; new events, signed,
// follow; and the audit says so.
func TestStoreOfThePreviousReleaseKeepsWorking(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail bool
	}{{"CleanStop", false}, {"CrashAfterTheLastCheckpoint", true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := context.Background()
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			secrets := previousRelease(t, env, priv, tc.tail)
			// The upgraded instance signs with the key it signed checkpoints with.
			store, err := events.Attach(ctx, env.JS, events.Config{Logger: natstest.Quiet(), Signer: events.NewSigner(priv)})
			if err != nil {
				t.Fatal(err)
			}
			table, runner := follow(t, store)
			store.UseVerdicts(table)
			now := time.Now()
			for i, s := range secrets[:3] {
				if got := table.Index().Verify(s, now).Code; got != domain.VerifyValid {
					t.Errorf("key %d, covered by the old checkpoint: %s, want VALID", i, got)
				}
			}
			if tc.tail {
				if got := table.Index().Verify(secrets[3], now).Code; got != domain.VerifyNotFound || runner.Rejected() != 1 {
					t.Errorf("the unsigned key after the last checkpoint: %s (%d refused), want NOT_FOUND, refused", got, runner.Rejected())
				}
			}
			keys := &domain.Keys{Store: store}
			if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "after the upgrade", By: asSystem}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := (&events.Checkpointer{Store: store}).Once(ctx); err != nil {
				t.Fatal(err)
			}
			r := audit(t, store, store.Signers(), nil)
			switch {
			case r.Finding != nil || r.Legacy != 3 || r.Checkpoints != 2:
				t.Errorf("audit: finding %v, %d legacy events, %d checkpoints; want 3 vouched for by 2 checkpoints", r.Finding, r.Legacy, r.Checkpoints)
			case tc.tail && (len(r.Forged) != 1 || !strings.Contains(r.Forged[0].Problem, "no signature")):
				t.Errorf("forged %v, want the unsigned event after the last old checkpoint", r.Forged)
			case !tc.tail && len(r.Forged) != 0:
				t.Errorf("forged %v, want none", r.Forged)
			}
		})
	}
}
