package events

import (
	"reflect"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// sampleEvents are events of every type as the domain decides them.
func sampleEvents(t testing.TB) []domain.Event {
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	now := time.Date(2026, 11, 27, 9, 0, 0, 123456000, time.UTC)
	actorBy := domain.PersonPrincipal("u", "ada", map[string]string{"acme": domain.RoleManager})
	created, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "k", Scopes: []string{"read", "write"}, ExpiresAt: now.Add(time.Hour), By: actorBy}, now, 0, secret)
	if err != nil {
		t.Fatal(err)
	}
	bare, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "no scopes, never expires", By: actorBy}, now, 0, secret)
	k, _ := domain.Rebuild([]domain.Event{created})
	rotated, _ := k.DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: actorBy}, now, secret)
	rotatedNow, _ := k.DecideRotate(domain.RotateKey{By: actorBy}, now, secret)
	revoked, _ := k.DecideRevoke(domain.RevokeKey{Reason: "leaked", By: actorBy}, now)
	rotated.PrevHash = "00aa"
	return []domain.Event{created, bare, rotated, rotatedNow, revoked}
}

func TestEveryEventWrittenDecodesFast(t *testing.T) {
	for _, e := range sampleEvents(t) {
		body, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		fast, ok := decodeFast(body, 9)
		if !ok {
			t.Fatalf("%s: not decoded fast: %s", e.Type, body)
		}
		slow, err := decodeJSON(body, 9)
		if err != nil || !reflect.DeepEqual(fast, slow) {
			t.Errorf("%s:\nfast %+v\nslow %+v (%v)", e.Type, fast, slow, err)
		}
	}
}

// FuzzDecodeFast: whatever the fast path takes, encoding/json reads the
// same.
//
//	go test -run '^$' -fuzz FuzzDecodeFast -fuzztime 30s ./events/
func FuzzDecodeFast(f *testing.F) {
	for _, e := range sampleEvents(f) {
		body, _ := Encode(e)
		f.Add(body)
	}
	f.Add([]byte(`{"event_id":"a","type":"KeyRevoked","schema_version":1,"org_id":"o","key_id":"k","occurred_at":"2026-02-29T00:00:00.000000Z","actor":{"kind":"a","id":"b","name":"c"},"prev_hash":"","data":{"reason":"x"}}`))
	var in interner
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := decodeFastIn(body, 3, &in)
		if !ok {
			return
		}
		slow, err := decodeJSON(body, 3)
		if err != nil {
			t.Fatalf("fast path took %q, encoding/json refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("body %q:\nfast %+v\nslow %+v", body, fast, slow)
		}
	})
}
