package events_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"maps"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

var system = domain.Actor{Kind: domain.ActorSystem, ID: "test", Name: "test"}

// asSystem is keyledger itself acting, for tests that are not about who may act.
var asSystem = domain.SystemPrincipal(system.ID, system.Name)

// audited is a stream with history and checkpoints, signed by its env's key.
type audited struct {
	env  *natstest.Env
	msgs []events.Msg
}

func newAudited(t *testing.T) *audited {
	t.Helper()
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	cp := &events.Checkpointer{Store: env.Store, Max: 8}
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
	a := &audited{env: env}
	a.msgs = messages(t, env.Store)
	return a
}

// messages copies every message of the stream, with keyledger's headers.
func messages(t *testing.T, s *events.Store) []events.Msg {
	t.Helper()
	var msgs []events.Msg
	if err := s.Scan(context.Background(), "", 1, func(m events.Msg) error {
		h := nats.Header{}
		for _, k := range []string{events.SignerHeader, events.SignatureHeader} {
			if v := m.Header.Get(k); v != "" {
				h.Set(k, v)
			}
		}
		msgs = append(msgs, events.Msg{Seq: m.Seq, Subject: m.Subject, Header: h, Data: append([]byte(nil), m.Data...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// cloneMsgs copies msgs deeply enough for a test to edit the copy.
func cloneMsgs(msgs []events.Msg) []events.Msg {
	out := make([]events.Msg, len(msgs))
	for i, m := range msgs {
		m.Header = nats.Header(maps.Clone(map[string][]string(m.Header)))
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// newSigner is a fresh signing key.
func newSigner(t *testing.T) *events.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return events.NewSigner(priv)
}

// copyInto publishes msgs, as they are, into env's stream.
func copyInto(t *testing.T, env *natstest.Env, msgs []events.Msg) {
	t.Helper()
	for _, m := range msgs {
		if _, err := env.JS.PublishMsg(context.Background(), &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
			t.Fatal(err)
		}
	}
}

// rewrite copies the stream into a fresh server, as someone with the files
// could, after edit has had its way with the list of messages.
func (a *audited) rewrite(t *testing.T, edit func([]events.Msg) []events.Msg) *events.Store {
	t.Helper()
	msgs := edit(cloneMsgs(a.msgs))
	dst := natstest.Start(t)
	copyInto(t, dst, msgs)
	return dst.Store
}

func (a *audited) audit(t *testing.T, s *events.Store) events.Report {
	t.Helper()
	return audit(t, s, a.env.Signers, nil)
}

func audit(t *testing.T, s *events.Store, set *events.Signers, anchor *events.Head) events.Report {
	t.Helper()
	r, err := events.Audit(context.Background(), s, events.AuditOptions{Signers: set, Anchor: anchor})
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

	t.Run("ForgedCheckpointIsNamed", func(t *testing.T) {
		var cpSeq uint64
		r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg {
			for i := range m {
				if m[i].Subject != events.CheckpointSubject {
					continue
				}
				// Rewrite the record and sign it with another key.
				m[i].Data = []byte(strings.Replace(string(m[i].Data), `"from_seq":0`, `"from_seq":1`, 1))
				m[i].Header.Set(events.SignatureHeader, strings.Repeat("A", 86)+"==")
				cpSeq = m[i].Seq
				break
			}
			return m
		}))
		if len(r.Forged) == 0 || r.Forged[0].Seq != cpSeq || !strings.Contains(r.Forged[0].Problem, "checkpoint") {
			t.Errorf("forged = %v, want the checkpoint at seq %d", r.Forged, cpSeq)
		}
		if r.Finding == nil || !strings.Contains(r.Finding.Problem, "checkpoint") {
			t.Errorf("finding = %v, want the signed record broken where the checkpoint was", r.Finding)
		}
	})

	t.Run("AlteredEventAfterTheLastCheckpointIsForged", func(t *testing.T) {
		r := a.audit(t, a.rewrite(t, func(m []events.Msg) []events.Msg {
			i := len(m) - 1 // the last rotation of key 2, after every checkpoint
			m[i].Data = []byte(strings.Replace(string(m[i].Data), `"prev_hash":"`, `"prev_hash":"f`, 1))
			return m
		}))
		// Its signature covers its body: altered, it is no longer keyledger's.
		if len(r.Forged) != 1 || r.Forged[0].Seq != last || !strings.Contains(r.Forged[0].Problem, "signature does not verify") {
			t.Errorf("forged = %v, want seq %d, whose signature does not verify", r.Forged, last)
		}
	})
}

func TestCheckpointsAreNotDuplicatedByConcurrentInstances(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	for range 5 {
		if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal("", "")}); err != nil {
			t.Fatal(err)
		}
	}
	results := make(chan bool, 8)
	for range 8 {
		go func() {
			wrote, _, err := (&events.Checkpointer{Store: env.Store}).Once(ctx)
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
	if r := audit(t, env.Store, env.Signers, nil); !r.Intact() || r.SignedUpTo != 5 {
		t.Errorf("audit = %+v %v %v", r, r.Finding, r.Forged)
	}
}
