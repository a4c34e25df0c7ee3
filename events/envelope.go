package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// TimeLayout is how every instant is written: UTC, microseconds.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Envelope is the JSON form of an event, the same for every type. Seq is
// not written to the stream (the stream numbers its messages); it is filled
// in when events are read back and shown.
type Envelope struct {
	EventID       string          `json:"event_id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	OrgID         string          `json:"org_id"`
	KeyID         string          `json:"key_id"`
	OccurredAt    string          `json:"occurred_at"`
	Actor         Actor           `json:"actor"`
	Data          json.RawMessage `json:"data"`
	// PrevHash is the SHA-256 (hex) of the key's previous event as stored,
	// "" for its first: each key's history is a hash chain.
	PrevHash string `json:"prev_hash"`
	Seq      uint64 `json:"seq,omitempty"`
}

// Actor is the JSON form of domain.Actor.
type Actor struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

type createdData struct {
	Name       string   `json:"name"`
	Scopes     []string `json:"scopes"`
	SecretHash string   `json:"secret_hash"`
	Masked     string   `json:"masked"`
	ExpiresAt  *string  `json:"expires_at"`
}

type rotatedData struct {
	SecretHash              string  `json:"secret_hash"`
	Masked                  string  `json:"masked"`
	PreviousSecretExpiresAt *string `json:"previous_secret_expires_at"`
}

type revokedData struct {
	Reason string `json:"reason"`
}

type webhookCreatedData struct {
	URLMasked    string   `json:"url_masked"`
	URLRef       string   `json:"url_ref"`
	Description  string   `json:"description"`
	EventTypes   []string `json:"event_types"`
	SecretRef    string   `json:"secret_ref"`
	SecretMasked string   `json:"secret_masked"`
}

type webhookUpdatedData struct {
	URLMasked   string   `json:"url_masked"`
	URLRef      string   `json:"url_ref"`
	Description string   `json:"description"`
	EventTypes  []string `json:"event_types"`
}

type webhookRotatedData struct {
	SecretRef               string  `json:"secret_ref"`
	SecretMasked            string  `json:"secret_masked"`
	PreviousSecretExpiresAt *string `json:"previous_secret_expires_at"`
}

type webhookReplayedData struct {
	From string `json:"from"`
}

func typeNames(types []domain.EventType) []string {
	out := make([]string, 0, len(types))
	for _, t := range types {
		out = append(out, string(t))
	}
	return out
}

func eventTypes(names []string) []domain.EventType {
	var out []domain.EventType
	for _, t := range names {
		out = append(out, domain.EventType(t))
	}
	return out
}

type webhookDisabledData struct {
	Reason string `json:"reason"`
}

type leakedData struct {
	SecretHash string `json:"secret_hash"`
	Masked     string `json:"masked"`
	Source     string `json:"source"`
	URL        string `json:"url"`
	Reporter   string `json:"reporter"`
}

// FormatTime writes t in TimeLayout; OptionalTime gives nil for the zero time.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// OptionalTime returns nil for the zero time and its formatted form otherwise.
func OptionalTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := FormatTime(t)
	return &s
}

func parseOptional(s *string) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, *s)
}

// ToEnvelope gives the JSON form of e, with Seq.
func ToEnvelope(e domain.Event) (Envelope, error) {
	var data any
	switch d := e.Data.(type) {
	case domain.KeyCreated:
		scopes := d.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		data = createdData{Name: d.Name, Scopes: scopes, SecretHash: d.SecretHash, Masked: d.Masked, ExpiresAt: OptionalTime(d.ExpiresAt)}
	case domain.KeyRotated:
		data = rotatedData{SecretHash: d.SecretHash, Masked: d.Masked, PreviousSecretExpiresAt: OptionalTime(d.PreviousSecretExpiresAt)}
	case domain.KeyRevoked:
		data = revokedData{Reason: d.Reason}
	case domain.KeyLeakReported:
		data = leakedData(d)
	case domain.WebhookCreated:
		data = webhookCreatedData{URLMasked: d.URLMasked, URLRef: d.URLRef, Description: d.Description, EventTypes: typeNames(d.EventTypes), SecretRef: d.SecretRef, SecretMasked: d.SecretMasked}
	case domain.WebhookUpdated:
		data = webhookUpdatedData{URLMasked: d.URLMasked, URLRef: d.URLRef, Description: d.Description, EventTypes: typeNames(d.EventTypes)}
	case domain.WebhookSecretRotated:
		data = webhookRotatedData{SecretRef: d.SecretRef, SecretMasked: d.SecretMasked, PreviousSecretExpiresAt: OptionalTime(d.PreviousExpiresAt)}
	case domain.WebhookReplayed:
		data = webhookReplayedData{From: FormatTime(d.From)}
	case domain.WebhookDisabled:
		data = webhookDisabledData(d)
	case domain.WebhookEnabled, domain.WebhookDeleted:
		data = struct{}{}
	default:
		return Envelope{}, fmt.Errorf("event %s: no encoding for %T", e.ID, e.Data)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{
		EventID: e.ID, Type: string(e.Type), SchemaVersion: e.SchemaVersion,
		OrgID: e.OrgID, KeyID: e.KeyID, OccurredAt: FormatTime(e.OccurredAt),
		Actor: Actor(e.Actor), Data: raw, PrevHash: e.PrevHash, Seq: e.Seq,
	}, nil
}

// Encode gives the stream body of e (its envelope without seq).
func Encode(e domain.Event) ([]byte, error) {
	env, err := ToEnvelope(e)
	if err != nil {
		return nil, err
	}
	env.Seq = 0
	return json.Marshal(env)
}

// Decode reads a stream body. An event of a type this code does not know
// decodes with nil Data, so that consumers can skip it.
func Decode(body []byte, seq uint64) (domain.Event, error) {
	if e, ok := decodeFast(body, seq); ok {
		return e, nil
	}
	return decodeJSON(body, seq)
}

// decodeJSON is Decode by encoding/json, for whatever decodeFast leaves.
func decodeJSON(body []byte, seq uint64) (domain.Event, error) {
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return domain.Event{Seq: seq}, fmt.Errorf("event at seq %d: %w", seq, err)
	}
	at, err := time.Parse(time.RFC3339Nano, env.OccurredAt)
	if err != nil {
		return domain.Event{Seq: seq}, fmt.Errorf("event at seq %d: occurred_at: %w", seq, err)
	}
	e := domain.Event{
		ID: env.EventID, Type: domain.EventType(env.Type), SchemaVersion: env.SchemaVersion,
		OrgID: env.OrgID, KeyID: env.KeyID, OccurredAt: at.UTC(), Actor: domain.Actor(env.Actor),
		PrevHash: env.PrevHash, Seq: seq,
	}
	e.Data, err = decodeData(e.Type, env.Data)
	if err != nil {
		return domain.Event{Seq: seq}, fmt.Errorf("event at seq %d: data: %w", seq, err)
	}
	return e, nil
}

func decodeData(t domain.EventType, raw json.RawMessage) (any, error) {
	switch t {
	case domain.TypeKeyCreated:
		var d createdData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		exp, err := parseOptional(d.ExpiresAt)
		return domain.KeyCreated{Name: d.Name, Scopes: d.Scopes, SecretHash: d.SecretHash, Masked: d.Masked, ExpiresAt: exp}, err
	case domain.TypeKeyRotated:
		var d rotatedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		exp, err := parseOptional(d.PreviousSecretExpiresAt)
		return domain.KeyRotated{SecretHash: d.SecretHash, Masked: d.Masked, PreviousSecretExpiresAt: exp}, err
	case domain.TypeKeyRevoked:
		var d revokedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		return domain.KeyRevoked(d), nil
	case domain.TypeKeyLeakReported:
		var d leakedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		return domain.KeyLeakReported(d), nil
	case domain.TypeWebhookCreated:
		var d webhookCreatedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		return domain.WebhookCreated{URLMasked: d.URLMasked, URLRef: d.URLRef, Description: d.Description, EventTypes: eventTypes(d.EventTypes), SecretRef: d.SecretRef, SecretMasked: d.SecretMasked}, nil
	case domain.TypeWebhookUpdated:
		var d webhookUpdatedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		return domain.WebhookUpdated{URLMasked: d.URLMasked, URLRef: d.URLRef, Description: d.Description, EventTypes: eventTypes(d.EventTypes)}, nil
	case domain.TypeWebhookSecretRotated:
		var d webhookRotatedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		exp, err := parseOptional(d.PreviousSecretExpiresAt)
		return domain.WebhookSecretRotated{SecretRef: d.SecretRef, SecretMasked: d.SecretMasked, PreviousExpiresAt: exp}, err
	case domain.TypeWebhookReplayed:
		var d webhookReplayedData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		from, err := time.Parse(time.RFC3339Nano, d.From)
		return domain.WebhookReplayed{From: from.UTC()}, err
	case domain.TypeWebhookDisabled:
		var d webhookDisabledData
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		return domain.WebhookDisabled(d), nil
	case domain.TypeWebhookEnabled:
		return domain.WebhookEnabled{}, nil
	case domain.TypeWebhookDeleted:
		return domain.WebhookDeleted{}, nil
	}
	return nil, nil
}
