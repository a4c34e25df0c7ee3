package domain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// memStore is the smallest Store that keeps events per key and numbers them
// with one stream sequence. It has no concurrency check: these tests do not
// race.
type memStore struct {
	mu        sync.Mutex
	seq       uint64
	events    map[string][]domain.Event
	createErr error
}

var _ domain.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{events: map[string][]domain.Event{}} }

func (s *memStore) Create(_ context.Context, e domain.Event) (domain.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return domain.Event{}, s.createErr
	}
	id := e.OrgID + "/" + e.KeyID
	if len(s.events[id]) > 0 {
		return domain.Event{}, domain.Errorf(domain.ECONFLICT, "key exists")
	}
	s.seq++
	e.Seq = s.seq
	s.events[id] = append(s.events[id], e)
	return e, nil
}

func (s *memStore) Update(_ context.Context, org, id string, fn func(*domain.Key) ([]domain.Event, error)) (*domain.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := domain.Rebuild(s.events[org+"/"+id])
	if err != nil {
		return nil, err
	}
	events, err := fn(k)
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		s.seq++
		e.Seq = s.seq
		if err := k.Apply(e); err != nil {
			return nil, err
		}
		s.events[org+"/"+id] = append(s.events[org+"/"+id], e)
	}
	return k, nil
}

// stored returns the events of k and the key rebuilt from them.
func (s *memStore) stored(t *testing.T, k *domain.Key) ([]domain.Event, *domain.Key) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	events := s.events[k.OrgID+"/"+k.ID]
	rebuilt, err := domain.Rebuild(events)
	if err != nil {
		t.Fatalf("Rebuild of stored events: %v", err)
	}
	return events, rebuilt
}

func (s *memStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, events := range s.events {
		n += len(events)
	}
	return n
}

// clock is a settable Keys.Now.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newKeys() (*domain.Keys, *memStore, *clock) {
	store, c := newMemStore(), &clock{now: t0}
	return &domain.Keys{Store: store, Now: c.Now}, store, c
}

func createKey(t *testing.T, keys *domain.Keys) domain.Issued {
	t.Helper()
	issued, err := keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: "ci", Scopes: []string{"read"}, By: byAlice})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return issued
}

func TestKeysCreate(t *testing.T) {
	ctx := context.Background()

	t.Run("ReturnsTheSecretWhoseHashIsInTheKey", func(t *testing.T) {
		keys, store, _ := newKeys()
		issued, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: " ci ", Scopes: []string{"read"}, By: byAlice})
		if err != nil {
			t.Fatal(err)
		}
		if !domain.WellFormed(issued.Secret) || !strings.HasPrefix(issued.Secret, domain.DefaultPrefix+"_") {
			t.Fatalf("Secret = %q, want a well-formed %s_ key", issued.Secret, domain.DefaultPrefix)
		}
		k := issued.Key
		if got, want := k.SecretHash, domain.HashSecret(issued.Secret); got != want {
			t.Errorf("SecretHash = %q, want %q", got, want)
		}
		if got, want := k.Masked, domain.MaskSecret(issued.Secret); got != want {
			t.Errorf("Masked = %q, want %q", got, want)
		}
		if got, want := k.Name, "ci"; got != want {
			t.Errorf("Name = %q, want %q", got, want)
		}
		if got, want := k.Version, uint64(1); got != want {
			t.Errorf("Version = %d, want %d", got, want)
		}
		if got, want := k.CreatedBy, alice; got != want {
			t.Errorf("CreatedBy = %+v, want %+v", got, want)
		}
		if got, want := k.Judge(domain.HashSecret(issued.Secret), t0).Code, domain.VerifyValid; got != want {
			t.Errorf("Judge of the issued secret = %q, want %q", got, want)
		}
		events, rebuilt := store.stored(t, k)
		if !keysEqual(*rebuilt, *k) {
			t.Errorf("key from the store:\n got %+v\nwant %+v", *rebuilt, *k)
		}
		if s := fmt.Sprintf("%+v", events); strings.Contains(s, issued.Secret) {
			t.Errorf("stored events hold the full secret: %s", s)
		}
	})

	t.Run("UsesTheConfiguredPrefix", func(t *testing.T) {
		keys, _, _ := newKeys()
		keys.Prefix = "acme"
		issued := createKey(t, keys)
		if !strings.HasPrefix(issued.Secret, "acme_") || !domain.WellFormed(issued.Secret) {
			t.Fatalf("Secret = %q, want a well-formed acme_ key", issued.Secret)
		}
		if got, want := issued.Key.Masked, "acme_****"+issued.Secret[len(issued.Secret)-4:]; got != want {
			t.Fatalf("Masked = %q, want %q", got, want)
		}
	})

	t.Run("TimesAreUTCToTheMicrosecond", func(t *testing.T) {
		keys, store, c := newKeys()
		cet := time.FixedZone("CET", 3600)
		c.now = time.Date(2026, 11, 26, 11, 0, 0, 123456789, cet)
		issued, err := keys.Create(ctx, domain.CreateKey{
			OrgID: "acme", Name: "ci", ExpiresAt: time.Date(2026, 12, 1, 13, 0, 0, 999999999, cet),
			By: byAlice,
		})
		if err != nil {
			t.Fatal(err)
		}
		k := issued.Key
		if got, want := k.CreatedAt, time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC); got != want {
			t.Errorf("CreatedAt = %v, want %v", got, want)
		}
		if got, want := k.ExpiresAt, time.Date(2026, 12, 1, 12, 0, 0, 999999000, time.UTC); got != want {
			t.Errorf("ExpiresAt = %v, want %v", got, want)
		}
		if _, rebuilt := store.stored(t, k); !keysEqual(*rebuilt, *k) {
			t.Errorf("key from the store:\n got %+v\nwant %+v", *rebuilt, *k)
		}
	})

	t.Run("ExpiryBeyondMaxIsInvalid", func(t *testing.T) {
		keys, store, _ := newKeys()
		keys.MaxExpiry = 24 * time.Hour
		_, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "ci", ExpiresAt: t0.Add(25 * time.Hour), By: byAlice})
		wantCode(t, err, domain.EINVALID)
		if got := store.count(); got != 0 {
			t.Fatalf("%d events stored, want 0", got)
		}
	})

	t.Run("InvalidCommandIsInvalidAndStoresNothing", func(t *testing.T) {
		keys, store, _ := newKeys()
		issued, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme.*", Name: "ci", By: byAlice})
		wantCode(t, err, domain.EINVALID)
		if issued.Secret != "" || issued.Key != nil {
			t.Fatalf("Create = %+v with an error, want zero", issued)
		}
		if got := store.count(); got != 0 {
			t.Fatalf("%d events stored, want 0", got)
		}
	})

	t.Run("RandomnessFailureIsInternal", func(t *testing.T) {
		keys, store, _ := newKeys()
		keys.Rand = errReader{errors.New("entropy pool on fire")}
		issued, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "ci", By: byAlice})
		wantCode(t, err, domain.EINTERNAL)
		if msg := domain.ErrorMessage(err); strings.Contains(msg, "fire") {
			t.Errorf("ErrorMessage = %q leaks the cause", msg)
		}
		if issued.Secret != "" || store.count() != 0 {
			t.Fatalf("Create = %+v, %d events stored; want nothing", issued, store.count())
		}
	})

	t.Run("StoreErrorIsReturned", func(t *testing.T) {
		keys, store, _ := newKeys()
		store.createErr = domain.Errorf(domain.EUNAVAILABLE, "no stream")
		issued, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "ci", By: byAlice})
		wantCode(t, err, domain.EUNAVAILABLE)
		if issued.Secret != "" {
			t.Fatalf("Create returned secret %q with an error", issued.Secret)
		}
	})
}

func TestKeysRotate(t *testing.T) {
	ctx := context.Background()

	t.Run("ReturnsNewSecretAndKeepsOldOneForTheGracePeriod", func(t *testing.T) {
		keys, store, c := newKeys()
		created := createKey(t, keys)
		c.now = t0.Add(time.Hour + 789*time.Nanosecond)
		now := t0.Add(time.Hour)
		issued, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{GracePeriod: time.Minute, IfVersion: created.Key.Version, By: byAlice})
		if err != nil {
			t.Fatal(err)
		}
		if issued.Secret == created.Secret || !domain.WellFormed(issued.Secret) {
			t.Fatalf("new Secret = %q (old %q), want a new well-formed key", issued.Secret, created.Secret)
		}
		k := issued.Key
		if got, want := k.SecretHash, domain.HashSecret(issued.Secret); got != want {
			t.Errorf("SecretHash = %q, want %q", got, want)
		}
		if got, want := k.RotatedAt, now; got != want {
			t.Errorf("RotatedAt = %v, want %v", got, want)
		}
		if got, want := k.PreviousExpiresAt, now.Add(time.Minute); got != want {
			t.Errorf("PreviousExpiresAt = %v, want %v", got, want)
		}
		if got, want := k.Version, uint64(2); got != want {
			t.Errorf("Version = %d, want %d", got, want)
		}
		if v := k.Judge(domain.HashSecret(created.Secret), now); !v.Valid() || !v.Deprecated {
			t.Errorf("old secret during grace: %+v, want valid and deprecated", v)
		}
		if _, rebuilt := store.stored(t, k); !keysEqual(*rebuilt, *k) {
			t.Errorf("key from the store:\n got %+v\nwant %+v", *rebuilt, *k)
		}
	})

	t.Run("StaleIfVersionIsPreconditionFailed", func(t *testing.T) {
		keys, _, _ := newKeys()
		created := createKey(t, keys)
		_, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{IfVersion: created.Key.Version + 1, By: byAlice})
		wantCode(t, err, domain.EPRECONDITION)
	})

	t.Run("RevokedKeyIsKeyRevoked", func(t *testing.T) {
		keys, _, _ := newKeys()
		created := createKey(t, keys)
		if _, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{By: byAlice}); err != nil {
			t.Fatal(err)
		}
		issued, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{By: byAlice})
		wantCode(t, err, domain.EKEYREVOKED)
		if issued.Secret != "" {
			t.Fatalf("Rotate returned secret %q with an error", issued.Secret)
		}
	})

	t.Run("UnknownKeyIsNotFound", func(t *testing.T) {
		keys, _, _ := newKeys()
		_, err := keys.Rotate(ctx, "acme", domain.NewKeyID(), domain.RotateKey{By: byAlice})
		wantCode(t, err, domain.ENOTFOUND)
	})
}

func TestKeysRevoke(t *testing.T) {
	ctx := context.Background()

	t.Run("RevokesEverySecret", func(t *testing.T) {
		keys, _, c := newKeys()
		created := createKey(t, keys)
		c.now = t0.Add(time.Minute)
		rotated, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{GracePeriod: time.Hour, By: byAlice})
		if err != nil {
			t.Fatal(err)
		}
		c.now = t0.Add(2 * time.Minute)
		k, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{Reason: "leaked", By: byAlice})
		if err != nil {
			t.Fatal(err)
		}
		if !k.Revoked || k.RevokedAt != c.now {
			t.Fatalf("Revoked, RevokedAt = %v, %v; want true, %v", k.Revoked, k.RevokedAt, c.now)
		}
		for _, s := range []string{created.Secret, rotated.Secret} {
			if got, want := k.Judge(domain.HashSecret(s), c.now).Code, domain.VerifyRevoked; got != want {
				t.Errorf("Judge(%s) = %q, want %q", domain.MaskSecret(s), got, want)
			}
		}
	})

	t.Run("RevokedKeyIsKeyRevoked", func(t *testing.T) {
		keys, _, _ := newKeys()
		created := createKey(t, keys)
		if _, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{By: byAlice}); err != nil {
			t.Fatal(err)
		}
		_, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{By: byAlice})
		wantCode(t, err, domain.EKEYREVOKED)
	})
}

// orgCounter counts a memStore's keys per org, as the listing does.
type orgCounter struct{ s *memStore }

func (c orgCounter) CountKeys(org string) (active, all int) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for id, evs := range c.s.events {
		if strings.HasPrefix(id, org+"/") {
			all++
			if evs[len(evs)-1].Type != domain.TypeKeyRevoked {
				active++
			}
		}
	}
	return active, all
}

func TestKeysCreateIsCappedPerOrg(t *testing.T) {
	ctx := context.Background()
	keys, store, _ := newKeys()
	keys.MaxPerOrg, keys.Counter = 2, orgCounter{store}
	first := createKey(t, keys)
	createKey(t, keys)
	before := store.count()
	_, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "third", By: byAlice})
	wantCode(t, err, domain.ECONFLICT)
	if msg := domain.ErrorMessage(err); !strings.Contains(msg, "2") || !strings.Contains(msg, "revoke some") {
		t.Errorf("message %q names neither the limit nor what to do", msg)
	}
	if got := store.count(); got != before {
		t.Errorf("a refused create appended: %d events, then %d", before, got)
	}
	// Revoking makes room.
	if _, err := keys.Revoke(ctx, "acme", first.Key.ID, domain.RevokeKey{By: byAlice}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "third", By: byAlice}); err != nil {
		t.Errorf("a create after a revocation made room: %v", err)
	}
	before = store.count()
	if got := store.count(); got != before {
		t.Errorf("a refused create appended: %d events, then %d", before, got)
	}
	if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "globex", Name: "elsewhere", By: domain.PersonPrincipal(alice.ID, alice.Name, map[string]string{"globex": domain.RoleManager})}); err != nil {
		t.Errorf("another org: %v", err)
	}
	// A bad request is told so, cap or not.
	_, err = keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "", By: byAlice})
	wantCode(t, err, domain.EINVALID)
}

func TestMayAddKey(t *testing.T) {
	for _, tt := range []struct {
		active, all, most int
		ok                bool
	}{
		{0, 0, 0, true}, {1 << 30, 1 << 30, 0, true}, {99999, 99999, 100000, true}, {100000, 100000, 100000, false},
		{100001, 100001, 100000, false}, {10, 999999, 100000, true}, {10, 1000000, 100000, false},
	} {
		err := domain.MayAddKey("acme", tt.active, tt.all, tt.most)
		if (err == nil) != tt.ok || err != nil && domain.ErrorCode(err) != domain.ECONFLICT {
			t.Errorf("MayAddKey(%d active, %d in all, cap %d) = %v, want ok %v", tt.active, tt.all, tt.most, err, tt.ok)
		}
	}
}
