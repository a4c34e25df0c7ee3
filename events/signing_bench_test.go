package events

import (
	"crypto/ed25519"
	"testing"

	"github.com/keyledger/keyledger/domain"
	"github.com/nats-io/nats.go"
)

// The costs of signing: what a command adds (SignEvent) and what applying
// an event no checkpoint covers adds (VerifyEvent), each beside the
// SHA-256 of the same body, which every append and every applied event
// computes anyway (BodyHash, for the key's chain). Run:
//
//	go test -run '^$' -bench 'Event|BodyHash' -benchmem ./events/
func benchEvent(b *testing.B) (*Signer, string, []byte) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	e := domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyCreated, SchemaVersion: 1, OrgID: "acme", KeyID: domain.NewKeyID(),
		Actor: domain.Actor{Kind: domain.ActorUser, ID: "u1", Name: "ada@example.com"},
		Data:  domain.KeyCreated{Name: "billing worker", SecretHash: domain.HashSecret("x"), Masked: "c8k_****abcd", Scopes: []string{"invoices:read"}}}
	body, err := Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	return NewSigner(priv), Subject(e.OrgID, e.KeyID, e.Type), body
}

func BenchmarkBodyHash(b *testing.B) {
	_, _, body := benchEvent(b)
	for b.Loop() {
		_ = BodyHash(body)
	}
}

func BenchmarkSignEvent(b *testing.B) {
	s, subject, body := benchEvent(b)
	for b.Loop() {
		m := &nats.Msg{Subject: subject, Data: body}
		s.SignEvent(m)
	}
}

func BenchmarkVerifyEvent(b *testing.B) {
	s, subject, body := benchEvent(b)
	m := &nats.Msg{Subject: subject, Data: body}
	s.SignEvent(m)
	set := NewSigners(s.Public())
	if got := set.VerifyEvent(1, subject, body, m.Header); got != "" {
		b.Fatalf("the event does not verify: %v", got)
	}
	for b.Loop() {
		_ = set.VerifyEvent(1, subject, body, m.Header)
	}
}
