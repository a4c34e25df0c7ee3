package events_test

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// FuzzDecode: no stored body panics the decoder, and whatever decodes into
// a known event encodes and decodes again to the same event.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 30s ./events/
func FuzzDecode(f *testing.F) {
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	now := time.Date(2026, 11, 27, 9, 0, 0, 123456000, time.UTC)
	created, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "k", Scopes: []string{"read"}, ExpiresAt: now.Add(time.Hour), By: domain.PersonPrincipal("u", "ada", map[string]string{"acme": domain.RoleManager})}, now, 0, secret)
	k, _ := domain.Rebuild([]domain.Event{created})
	rotated, _ := k.DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: asSystem}, now, secret)
	revoked, _ := k.DecideRevoke(domain.RevokeKey{Reason: "leaked", By: asSystem}, now)
	for _, e := range []domain.Event{created, rotated, revoked} {
		body, _ := events.Encode(e)
		f.Add(body)
	}
	f.Add([]byte(`{"type":"KeyRenamed","occurred_at":"2026-11-27T09:00:00Z","data":{}}`))
	f.Add([]byte(`{"type":"KeyCreated","occurred_at":"not a time"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := events.Decode(body, 7)
		if err != nil || e.Data == nil {
			return
		}
		again, err := events.Encode(e)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", e, err)
		}
		e2, err := events.Decode(again, 7)
		if err != nil || e2.ID != e.ID || e2.Type != e.Type || !e2.OccurredAt.Equal(e.OccurredAt.Truncate(time.Microsecond)) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v (%v)", e, e2, err)
		}
	})
}
