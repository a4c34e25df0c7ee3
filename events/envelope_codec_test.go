package events_test

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// codecAt is an instant already to the microsecond, as the envelope keeps it.
var codecAt = time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC)

var codecActor = domain.Actor{Kind: domain.ActorUser, ID: "u_42", Name: "Tess Ter"}

// codecEvent is an event of type t with data d, as a command would decide it.
func codecEvent(t domain.EventType, d any) domain.Event {
	return domain.Event{
		ID: domain.NewEventID(), Type: t, SchemaVersion: domain.SchemaVersion,
		OrgID: "acme", KeyID: domain.NewKeyID(), OccurredAt: codecAt, Actor: codecActor,
		Data: d, PrevHash: strings.Repeat("ab", 32),
	}
}

// envelopeFields are PRODUCT.md's envelope, and prev_hash (README: the
// hash chain of each key's history).
var envelopeFields = []string{"actor", "data", "event_id", "key_id", "occurred_at", "org_id", "prev_hash", "schema_version", "type"}

var microsUTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestEnvelopeCodec(t *testing.T) {
	hash := domain.HashSecret("c8k_example")
	for _, tt := range []struct {
		name string
		e    domain.Event
		data map[string]any // the "data" object as JSON decodes it
	}{
		{
			"KeyCreatedWithoutExpiry",
			codecEvent(domain.TypeKeyCreated, domain.KeyCreated{Name: "ci", Scopes: []string{"read", "write"}, SecretHash: hash, Masked: "c8k_****abcd"}),
			map[string]any{"name": "ci", "scopes": []any{"read", "write"}, "secret_hash": hash, "masked": "c8k_****abcd", "expires_at": nil},
		},
		{
			"KeyCreatedWithExpiry",
			codecEvent(domain.TypeKeyCreated, domain.KeyCreated{Name: "ci", Scopes: []string{}, SecretHash: hash, Masked: "c8k_****abcd", ExpiresAt: codecAt.Add(24 * time.Hour)}),
			map[string]any{"name": "ci", "scopes": []any{}, "secret_hash": hash, "masked": "c8k_****abcd", "expires_at": "2026-11-27T10:00:00.123456Z"},
		},
		{
			"KeyRotatedWithoutGrace",
			codecEvent(domain.TypeKeyRotated, domain.KeyRotated{SecretHash: hash, Masked: "c8k_****wxyz"}),
			map[string]any{"secret_hash": hash, "masked": "c8k_****wxyz", "previous_secret_expires_at": nil},
		},
		{
			"KeyRotatedWithGrace",
			codecEvent(domain.TypeKeyRotated, domain.KeyRotated{SecretHash: hash, Masked: "c8k_****wxyz", PreviousSecretExpiresAt: codecAt.Add(time.Hour)}),
			map[string]any{"secret_hash": hash, "masked": "c8k_****wxyz", "previous_secret_expires_at": "2026-11-26T11:00:00.123456Z"},
		},
		{
			"KeyRevoked",
			codecEvent(domain.TypeKeyRevoked, domain.KeyRevoked{Reason: "leaked in a log"}),
			map[string]any{"reason": "leaked in a log"},
		},
		{
			"KeyRevokedWithoutReason",
			codecEvent(domain.TypeKeyRevoked, domain.KeyRevoked{}),
			map[string]any{"reason": ""},
		},
	} {
		t.Run(tt.name+"RoundTrips", func(t *testing.T) {
			body, err := events.Encode(tt.e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.Decode(body, 42)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := tt.e
			want.Seq = 42
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode(Encode(e)):\n got %+v\nwant %+v", got, want)
			}
		})

		t.Run(tt.name+"HasTheContractFields", func(t *testing.T) {
			e := tt.e
			e.Seq = 99 // known to the caller, but the stream numbers its messages
			body, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if got, want := sortedKeys(m), envelopeFields; !slices.Equal(got, want) {
				t.Errorf("fields = %q, want %q", got, want)
			}
			if _, ok := m["seq"]; ok {
				t.Errorf("stream body holds seq: %s", body)
			}
			for field, want := range map[string]any{
				"event_id": e.ID, "type": string(e.Type), "schema_version": float64(1),
				"org_id": "acme", "key_id": e.KeyID, "occurred_at": "2026-11-26T10:00:00.123456Z",
				"prev_hash": e.PrevHash,
				"actor":     map[string]any{"kind": "user", "id": "u_42", "name": "Tess Ter"},
			} {
				if got := m[field]; !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", field, got, want)
				}
			}
			if got := m["data"]; !reflect.DeepEqual(got, tt.data) {
				t.Errorf("data = %#v, want %#v", got, tt.data)
			}
		})
	}
}

func TestEnvelopeTimes(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	for _, tt := range []struct {
		name string
		in   time.Time
		want string
	}{
		{"MicrosecondsKept", codecAt, "2026-11-26T10:00:00.123456Z"},
		{"WholeSecondHasSixZeros", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000000Z"},
		{"NanosecondsTruncated", time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC), "2026-01-02T03:04:05.999999Z"},
		{"OtherZoneWrittenAsUTC", time.Date(2026, 11, 26, 11, 0, 0, 123456789, cet), "2026-11-26T10:00:00.123456Z"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := codecEvent(domain.TypeKeyRotated, domain.KeyRotated{PreviousSecretExpiresAt: tt.in})
			e.OccurredAt = tt.in
			body, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				OccurredAt string `json:"occurred_at"`
				Data       struct {
					Prev string `json:"previous_secret_expires_at"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if got, want := m.OccurredAt, tt.want; got != want {
				t.Errorf("occurred_at = %q, want %q", got, want)
			}
			if got, want := m.Data.Prev, tt.want; got != want {
				t.Errorf("previous_secret_expires_at = %q, want %q", got, want)
			}
			if !microsUTC.MatchString(m.OccurredAt) {
				t.Errorf("occurred_at %q is not UTC with 6 fractional digits", m.OccurredAt)
			}
			d, err := events.Decode(body, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := d.OccurredAt, tt.in.UTC().Truncate(time.Microsecond); got != want {
				t.Errorf("decoded OccurredAt = %v, want %v", got, want)
			}
		})
	}
}

func TestEnvelopeWithSeqIsTheAPIEvent(t *testing.T) {
	e := codecEvent(domain.TypeKeyRevoked, domain.KeyRevoked{Reason: "x"})
	e.Seq = 7
	env, err := events.ToEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := m["seq"], float64(7); got != want {
		t.Errorf("seq = %v, want %v", got, want)
	}
}

func TestEncodeOfUnknownDataIsError(t *testing.T) {
	for _, d := range []any{nil, "text", struct{ X int }{1}} {
		if body, err := events.Encode(codecEvent("KeyRenamed", d)); err == nil {
			t.Errorf("Encode(data %T) = %s, want an error", d, body)
		}
	}
}

func TestDecode(t *testing.T) {
	t.Run("UnknownTypeHasNilDataAndNoError", func(t *testing.T) {
		id, kid := domain.NewEventID(), domain.NewKeyID()
		body := `{"event_id":"` + id + `","type":"KeyRenamed","schema_version":2,"org_id":"acme","key_id":"` + kid +
			`","occurred_at":"2026-11-26T10:00:00.123456Z","actor":{"kind":"user","id":"u_1","name":"A"},"data":{"name":"new"}}`
		e, err := events.Decode([]byte(body), 9)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if e.Data != nil {
			t.Errorf("Data = %#v, want nil", e.Data)
		}
		want := domain.Event{
			ID: id, Type: "KeyRenamed", SchemaVersion: 2, OrgID: "acme", KeyID: kid, OccurredAt: codecAt,
			Actor: domain.Actor{Kind: "user", ID: "u_1", Name: "A"}, Seq: 9,
		}
		if !reflect.DeepEqual(e, want) {
			t.Errorf("Decode:\n got %+v\nwant %+v", e, want)
		}
	})

	t.Run("SeqComesFromTheStreamNotTheBody", func(t *testing.T) {
		body, err := events.Encode(codecEvent(domain.TypeKeyRevoked, domain.KeyRevoked{}))
		if err != nil {
			t.Fatal(err)
		}
		body = []byte(strings.Replace(string(body), "{", `{"seq":1000,`, 1))
		e, err := events.Decode(body, 3)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Seq, uint64(3); got != want {
			t.Errorf("Seq = %d, want %d", got, want)
		}
	})

	for _, tt := range []struct {
		name string
		body string
	}{
		{"Garbage", "{not json"},
		{"Empty", ""},
		{"JSONArray", "[1,2]"},
		{"BadOccurredAt", `{"type":"KeyRevoked","occurred_at":"yesterday","data":{}}`},
		{"CreatedDataNotAnObject", `{"type":"KeyCreated","occurred_at":"2026-11-26T10:00:00.123456Z","data":"oops"}`},
		{"RotatedBadGraceEnd", `{"type":"KeyRotated","occurred_at":"2026-11-26T10:00:00.123456Z","data":{"previous_secret_expires_at":"soon"}}`},
		{"CreatedBadExpiry", `{"type":"KeyCreated","occurred_at":"2026-11-26T10:00:00.123456Z","data":{"expires_at":"never"}}`},
	} {
		t.Run(tt.name+"IsErrorCarryingTheSeq", func(t *testing.T) {
			e, err := events.Decode([]byte(tt.body), 77)
			if err == nil {
				t.Fatalf("Decode(%q) = %+v, want an error", tt.body, e)
			}
			if got, want := e.Seq, uint64(77); got != want {
				t.Errorf("Seq = %d, want %d", got, want)
			}
			if !strings.Contains(err.Error(), "seq 77") {
				t.Errorf("error %q does not name seq 77", err)
			}
			if e.Data != nil {
				t.Errorf("Data = %#v with an error, want nil", e.Data)
			}
		})
	}
}
