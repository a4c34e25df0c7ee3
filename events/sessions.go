package events

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SessionsBucket is the key-value bucket where instances share the
// sessions of people signed in on the page (and the sign-ins under way),
// so that any instance serves any session and a restart signs nobody out.
// What the HTTP layer puts there is named by a hash of the cookie and
// sealed with a key only the cookie gives (http/sso.go): a reader of NATS
// finds neither a token nor a way to use one.
const SessionsBucket = "KEYLEDGER_SESSIONS"

// SessionsTTL is how long an entry lives after its last write; a session
// ends sooner, at what it holds (its ID token's expiry), unless renewed.
const SessionsTTL = 24 * time.Hour

// Sessions is the bucket.
type Sessions struct {
	kv jetstream.KeyValue
}

// OpenSessions opens the bucket, creating it only when it is missing.
func OpenSessions(ctx context.Context, js jetstream.JetStream, replicas int) (*Sessions, error) {
	return openSessions(ctx, js, jetstream.KeyValueConfig{
		Bucket:      SessionsBucket,
		Description: "keyledger: sessions of people signed in on the page, sealed per cookie",
		TTL:         SessionsTTL,
		MaxBytes:    SessionsMaxBytes,
	}, replicas)
}

// SignInsBucket keeps the sign-ins under way, each for SignInsTTL: anyone
// may start one, so its entries expire soon and its size is bounded.
const SignInsBucket = "KEYLEDGER_SIGNINS"

const (
	SignInsTTL       = 10 * time.Minute
	SignInsMaxBytes  = 64 << 20  // past it, a new sign-in is refused (503) until older ones expire
	SessionsMaxBytes = 512 << 20 // some two million sessions
)

// OpenSignIns opens the sign-ins' bucket, creating it only when missing.
func OpenSignIns(ctx context.Context, js jetstream.JetStream, replicas int) (*Sessions, error) {
	return openSessions(ctx, js, jetstream.KeyValueConfig{
		Bucket:      SignInsBucket,
		Description: "keyledger: sign-ins under way, sealed per browser, for ten minutes",
		TTL:         SignInsTTL,
		MaxBytes:    SignInsMaxBytes,
	}, replicas)
}

func openSessions(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, replicas int) (*Sessions, error) {
	cfg.History, cfg.Storage, cfg.Replicas = 1, jetstream.FileStorage, max(replicas, 1)
	kv, err := openKeyValue(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	return &Sessions{kv: kv}, nil
}

// Put sets the entry name to value.
func (s *Sessions) Put(ctx context.Context, name string, value []byte) error {
	_, err := s.kv.Put(ctx, name, value)
	return err
}

// Get returns the entry's value; nil when there is none.
func (s *Sessions) Get(ctx context.Context, name string) ([]byte, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// Take returns the entry's value and deletes it, so that only one caller,
// on any instance, ever gets it (a sign-in's state is used once); nil when
// there is none or another took it first.
func (s *Sessions) Take(ctx context.Context, name string) ([]byte, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.kv.Delete(ctx, name, jetstream.LastRevision(e.Revision())); err != nil {
		if stale(err) {
			return nil, nil
		}
		return nil, err
	}
	return e.Value(), nil
}

// Delete removes the entry.
func (s *Sessions) Delete(ctx context.Context, name string) error {
	return s.kv.Delete(ctx, name)
}
