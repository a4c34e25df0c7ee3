package events_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

var system = domain.Actor{Kind: domain.ActorSystem, ID: "test", Name: "test"}

// asSystem is keyledger itself acting, for tests that are not about who may act.
var asSystem = domain.SystemPrincipal(system.ID, system.Name)

// audited is a stream with history and checkpoints, and its signing key.
type audited struct {
	env  *natstest.Env
	priv ed25519.PrivateKey
	msgs []events.Msg
}

func newAudited(t *testing.T) *audited {
	t.Helper()
	env := natstest.Start(t)
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := &domain.Keys{Store: env.Store}
	cp := &events.Checkpointer{Store: env.Store, Key: priv, Max: 8}
	system := domain.Actor{Kind: domain.ActorSystem, ID: "test"}
	var ids []string
	for round := range 2 {
		for range 3 {
			k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal(system.ID, system.Name)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, k.Key.ID)
		}
		for _, id := range ids[round*3:] {
			if _, err := keys.Rotate(ctx, "acme", id, domain.RotateKey{By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := keys.Revoke(ctx, "acme", ids[round*3], domain.RevokeKey{By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
			t.Fatal(err)
		}
		for more := true; more; {
			var err error
			if _, more, err = cp.Once(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One more event after the last checkpoint: only its key's chain covers it.
	if _, err := keys.Rotate(ctx, "acme", ids[1], domain.RotateKey{By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
		t.Fatal(err)
	}
	a := &audited{env: env, priv: priv}
	if err := env.Store.Scan(ctx, "", 1, func(m events.Msg) error {
		a.msgs = append(a.msgs, events.Msg{Seq: m.Seq, Subject: m.Subject, Data: append([]byte(nil), m.Data...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return a
}

// rewrite copies the stream into a fresh server, as someone with the files
// could, after edit has had its way with the list of messages.
func (a *audited) rewrite(t *testing.T, edit func([]events.Msg) []events.Msg) *events.Store {
	t.Helper()
	msgs := edit(append([]events.Msg(nil), a.msgs...))
	dst := natstest.Start(t)
	for _, m := range msgs {
		if _, err := dst.JS.Publish(context.Background(), m.Subject, m.Data); err != nil {
			t.Fatal(err)
		}
	}
	return dst.Store
}

func (a *audited) audit(t *testing.T, s *events.Store) events.Report {
	t.Helper()
	r, err := events.Audit(context.Background(), s, a.priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// eventSeq returns the sequence of the n-th event (not checkpoint) message.
func (a *audited) index(t *testing.T, seq uint64) int {
	t.Helper()
	for i, m := range a.msgs {
		if m.Seq == seq {
			return i
		}
	}
	t.Fatalf("no message at seq %d", seq)
	return 0
}

func TestAudit(t *testing.T) {
	a := newAudited(t)
	last := a.msgs[len(a.msgs)-1].Seq

	t.Run("UntouchedStreamIsIntact", func(t *testing.T) {
		r := a.audit(t, a.env.Store)
		if !r.Intact() || r.LastSeq != last || r.Checkpoints < 2 || r.SignedUpTo == 0 || r.SignedUpTo >= last {
			t.Errorf("report = %+v (%v), want intact up to %d, signed before it", r, r.Finding, last)
		}
		if r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg { return m })); !r.Intact() {
			t.Errorf("a faithful copy: %v", r.Finding)
		}
	})

	for _, tc := range []struct {
		name string
		seq  uint64 // the event the test tampers with
		edit func(t *testing.T, msgs []events.Msg, i int) []events.Msg
		want string
	}{
		{"RemovedEventIsNamed", 3, func(t *testing.T, m []events.Msg, i int) []events.Msg {
			return append(m[:i], m[i+1:]...)
		}, "removed"},
		{"RemovedLastEventOfAKeyIsNamed", 6, func(t *testing.T, m []events.Msg, i int) []events.Msg {
			return append(m[:i], m[i+1:]...)
		}, "removed"},
		{"AlteredFieldIsNamed", 4, func(t *testing.T, m []events.Msg, i int) []events.Msg {
			m[i].Data = []byte(strings.Replace(string(m[i].Data), `"actor":{"kind":"system"`, `"actor":{"kind":"user"`, 1))
			return m
		}, "altered"},
		{"SwappedEventsAreNamed", 2, func(t *testing.T, m []events.Msg, i int) []events.Msg {
			m[i], m[i+1] = m[i+1], m[i]
			return m
		}, "reordered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg { return tc.edit(t, m, a.index(t, tc.seq)) }))
			if r.Finding == nil || r.Finding.Seq != tc.seq || !strings.Contains(r.Finding.Problem, tc.want) {
				t.Errorf("finding = %v, want seq %d %s", r.Finding, tc.seq, tc.want)
			}
		})
	}

	t.Run("ForgedCheckpointSignatureIsNamed", func(t *testing.T) {
		var cpSeq uint64
		r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg {
			for i := range m {
				if m[i].Subject != events.CheckpointSubject {
					continue
				}
				var cp events.Checkpoint
				_ = json.Unmarshal(m[i].Data, &cp)
				cp.Events[0].Hash = strings.Repeat("0", 64) // rewrite the record...
				_, forger, _ := ed25519.GenerateKey(rand.Reader)
				cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(forger, []byte("...and sign it with another key")))
				m[i].Data, _ = json.Marshal(cp)
				cpSeq = m[i].Seq
				break
			}
			return m
		}))
		if r.Finding == nil || r.Finding.Seq != cpSeq || !strings.Contains(r.Finding.Problem, "forged") {
			t.Errorf("finding = %v, want the checkpoint at seq %d forged", r.Finding, cpSeq)
		}
	})

	t.Run("EventAfterTheLastCheckpointIsChainedToItsKey", func(t *testing.T) {
		r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg {
			i := len(m) - 1 // the last rotation of key 2, after every checkpoint
			m[i].Data = []byte(strings.Replace(string(m[i].Data), `"prev_hash":"`, `"prev_hash":"f`, 1))
			return m
		}))
		if r.Finding == nil || r.Finding.Seq != last || !strings.Contains(r.Finding.Problem, "prev_hash") {
			t.Errorf("finding = %v, want seq %d's prev_hash", r.Finding, last)
		}
	})
}

func TestCheckpointsAreNotDuplicatedByConcurrentInstances(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := &domain.Keys{Store: env.Store}
	for range 5 {
		if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal("", "")}); err != nil {
			t.Fatal(err)
		}
	}
	results := make(chan bool, 8)
	for range 8 {
		go func() {
			wrote, _, err := (&events.Checkpointer{Store: env.Store, Key: priv}).Once(ctx)
			if err != nil {
				t.Error(err)
			}
			results <- wrote
		}()
	}
	wrote := 0
	for range 8 {
		if <-results {
			wrote++
		}
	}
	var checkpoints int
	_ = env.Store.Scan(ctx, events.CheckpointSubject, 1, func(events.Msg) error { checkpoints++; return nil })
	if wrote != 1 || checkpoints != 1 {
		t.Errorf("%d instances wrote, %d checkpoints stored; want exactly one", wrote, checkpoints)
	}
	if r, _ := events.Audit(ctx, env.Store, priv.Public().(ed25519.PublicKey)); !r.Intact() || r.SignedUpTo != 5 {
		t.Errorf("audit = %+v %v", r, r.Finding)
	}
}
