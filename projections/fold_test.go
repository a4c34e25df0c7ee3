package projections_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// base is the instant the test histories start, to the microsecond.
var base = time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC)

var manager = domain.Actor{Kind: domain.ActorUser, ID: "u_1", Name: "Manager"}

// managerBy is manager signed in, a manager of every org these tests use.
var managerBy = domain.PersonPrincipal(manager.ID, manager.Name, map[string]string{"acme": domain.RoleManager, "globex": domain.RoleManager, "initech": domain.RoleManager})

// ledger decides events with the domain's own commands and numbers them as
// the stream would, keeping each key's state to decide the next one.
type ledger struct {
	t    *testing.T
	evs  []domain.Event
	keys map[string]*domain.Key // by key id
}

func newLedger(t *testing.T) *ledger {
	return &ledger{t: t, keys: map[string]*domain.Key{}}
}

func (l *ledger) add(e domain.Event) domain.Event {
	l.t.Helper()
	e.Seq, e.Trusted = uint64(len(l.evs)+1), true // keyledger wrote it
	if e.Data != nil {
		k := l.keys[e.KeyID]
		if k == nil {
			k = &domain.Key{}
			l.keys[e.KeyID] = k
		}
		if err := k.Apply(e); err != nil {
			l.t.Fatal(err)
		}
	}
	l.evs = append(l.evs, e)
	return e
}

func (l *ledger) secret() string {
	l.t.Helper()
	s, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}

// create adds a key of org created at at, expiring at expires (zero: never).
func (l *ledger) create(org string, at, expires time.Time) (id, secret string) {
	l.t.Helper()
	secret = l.secret()
	e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: "key " + org, Scopes: []string{"read"}, ExpiresAt: expires, By: managerBy}, at, 0, secret)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.add(e).KeyID, secret
}

func (l *ledger) rotate(id string, at time.Time, grace time.Duration) (secret string) {
	l.t.Helper()
	secret = l.secret()
	e, err := l.keys[id].DecideRotate(domain.RotateKey{GracePeriod: grace, By: managerBy}, at, secret)
	if err != nil {
		l.t.Fatal(err)
	}
	l.add(e)
	return secret
}

func (l *ledger) revoke(id string, at time.Time) {
	l.t.Helper()
	e, err := l.keys[id].DecideRevoke(domain.RevokeKey{Reason: "done", By: managerBy}, at)
	if err != nil {
		l.t.Fatal(err)
	}
	l.add(e)
}

// unknown adds an event of a type this code does not know, as Decode gives it.
func (l *ledger) unknown(org, id string) domain.Event {
	return l.add(domain.Event{ID: domain.NewEventID(), Type: "KeyRenamed", SchemaVersion: 2, OrgID: org, KeyID: id, OccurredAt: base})
}

func (l *ledger) key(id string) domain.Key { return *l.keys[id] }

// feed applies every event to each projection, in order.
func (l *ledger) feed(ps ...projections.Projection) {
	l.t.Helper()
	for _, e := range l.evs {
		for _, p := range ps {
			if err := p.Apply(e); err != nil {
				l.t.Fatalf("%T.Apply(seq %d): %v", p, e.Seq, err)
			}
		}
	}
}

func ids(ks []domain.Key) []string {
	out := []string{}
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

// listingScenario: five keys of acme created in order — active, revoked,
// expired by now, rotated, active — and one of globex.
type listingScenario struct {
	l                                *ledger
	active1, revoked, expired, rot   string
	active2, other                   string
	now                              time.Time
	listing                          *projections.Listing
	newestFirstAll, newestFirstShown []string
}

func newListingScenario(t *testing.T) listingScenario {
	t.Helper()
	s := listingScenario{l: newLedger(t), now: base.Add(2 * time.Hour)}
	s.active1, _ = s.l.create("acme", base, time.Time{})
	s.revoked, _ = s.l.create("acme", base, time.Time{})
	s.expired, _ = s.l.create("acme", base, base.Add(time.Hour))
	s.other, _ = s.l.create("globex", base, time.Time{})
	s.rot, _ = s.l.create("acme", base, base.Add(48*time.Hour))
	s.active2, _ = s.l.create("acme", base, time.Time{})
	s.l.revoke(s.revoked, base.Add(time.Minute))
	s.l.rotate(s.rot, base.Add(time.Minute), 0)
	s.listing = projections.NewListing()
	s.l.feed(s.listing)
	s.newestFirstAll = []string{s.active2, s.rot, s.expired, s.revoked, s.active1}
	s.newestFirstShown = []string{s.active2, s.rot, s.expired, s.active1}
	return s
}

func TestListingList(t *testing.T) {
	s := newListingScenario(t)
	for _, tt := range []struct {
		name   string
		org    string
		status string
		want   []string
	}{
		{"DefaultIsNewestFirstWithoutRevoked", "acme", "", s.newestFirstShown},
		{"AllAddsRevoked", "acme", "all", s.newestFirstAll},
		{"ActiveOnly", "acme", "active", []string{s.active2, s.rot, s.active1}},
		{"ExpiredOnly", "acme", "expired", []string{s.expired}},
		{"RevokedOnly", "acme", "revoked", []string{s.revoked}},
		{"OtherOrgSeesOnlyItsOwn", "globex", "all", []string{s.other}},
		{"UnknownOrgIsEmpty", "initech", "all", []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			page, next := s.listing.List(tt.org, projections.ListQuery{Status: tt.status, Limit: 100, Now: s.now})
			if got := ids(page); !slices.Equal(got, tt.want) {
				t.Errorf("ids = %v, want %v", got, tt.want)
			}
			if next != "" {
				t.Errorf("next = %q, want none", next)
			}
		})
	}

	t.Run("PagesAreTheKeysAsFromTheStart", func(t *testing.T) {
		if got, want := ids(mustList(t, s.listing, "acme", "all", s.now)), s.newestFirstAll; !slices.Equal(got, want) {
			t.Errorf("ids = %v, want %v", got, want)
		}
		page, _ := s.listing.List("acme", projections.ListQuery{Status: "all", Limit: 100, Now: s.now})
		for i, k := range page {
			want := s.l.key(k.ID)
			want.SecretHash, want.PreviousSecretHash, want.LastHash = "", "", "" // a page has no hashes
			if !reflect.DeepEqual(k, want) {
				t.Errorf("page[%d]:\n got %+v\nwant %+v", i, k, want)
			}
		}
	})
}

// mustList is List without a limit.
func mustList(t *testing.T, l *projections.Listing, org, status string, now time.Time) []domain.Key {
	t.Helper()
	page, next := l.List(org, projections.ListQuery{Status: status, Limit: 1000, Now: now})
	if next != "" {
		t.Fatalf("more than 1000 keys")
	}
	return page
}

func TestListingPagination(t *testing.T) {
	s := newListingScenario(t)
	for _, tt := range []struct {
		name   string
		status string
		limit  int
		want   [][]string // the pages
	}{
		{"AllByTwo", "all", 2, [][]string{{s.active2, s.rot}, {s.expired, s.revoked}, {s.active1}}},
		{"DefaultByTwoSkipsRevoked", "", 2, [][]string{{s.active2, s.rot}, {s.expired, s.active1}}},
		{"DefaultByThree", "", 3, [][]string{{s.active2, s.rot, s.expired}, {s.active1}}},
		{"AllByOne", "all", 1, [][]string{{s.active2}, {s.rot}, {s.expired}, {s.revoked}, {s.active1}}},
		{"ExactLimitHasNoNextPage", "all", 5, [][]string{s.newestFirstAll}},
		{"LargeLimitIsOnePage", "all", 50, [][]string{s.newestFirstAll}},
		{"ActiveByTwo", "active", 2, [][]string{{s.active2, s.rot}, {s.active1}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]string
			cursor := ""
			for range 10 {
				page, next := s.listing.List("acme", projections.ListQuery{Status: tt.status, Cursor: cursor, Limit: tt.limit, Now: s.now})
				got = append(got, ids(page))
				if next == "" {
					break
				}
				if got, want := next, page[len(page)-1].ID; got != want {
					t.Errorf("next = %q, want the last id of the page %q", got, want)
				}
				cursor = next
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("pages = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("CursorPastTheOldestIsEmpty", func(t *testing.T) {
		page, next := s.listing.List("acme", projections.ListQuery{Status: "all", Cursor: s.active1, Limit: 10, Now: s.now})
		if len(page) != 0 || next != "" {
			t.Errorf("List = %v, %q; want nothing", ids(page), next)
		}
	})
}

func TestListingGet(t *testing.T) {
	s := newListingScenario(t)

	t.Run("KeyHoldsEveryEventAndTheLastSeq", func(t *testing.T) {
		for _, id := range s.newestFirstAll {
			got, ok := s.listing.Get("acme", id)
			if !ok {
				t.Fatalf("Get(acme, %s) not found", id)
			}
			if want := s.l.key(id); !reflect.DeepEqual(got, want) {
				t.Errorf("Get(%s):\n got %+v\nwant %+v", id, got, want)
			}
		}
		if k, _ := s.listing.Get("acme", s.rot); k.RotatedAt.IsZero() || k.Version != uint64(len(s.l.evs)) {
			t.Errorf("rotated key = %+v, want RotatedAt and Version %d", k, len(s.l.evs))
		}
	})

	t.Run("ReturnsACopy", func(t *testing.T) {
		k, _ := s.listing.Get("acme", s.active1)
		k.Name, k.Revoked, k.Version, k.SecretHash = "changed", true, 999, "sha256:changed"
		if got, want := mustGet(t, s.listing, "acme", s.active1), s.l.key(s.active1); !reflect.DeepEqual(got, want) {
			t.Errorf("after changing the copy:\n got %+v\nwant %+v", got, want)
		}
		page := mustList(t, s.listing, "acme", "all", s.now)
		page[0].Name = "changed"
		if got := mustGet(t, s.listing, "acme", page[0].ID).Name; got == "changed" {
			t.Error("changing a listed key changed the listing")
		}
	})

	for _, tt := range []struct{ name, org, id string }{
		{"UnknownKeyIsNotFound", "acme", domain.NewKeyID()},
		{"KeyUnderAnotherOrgIsNotFound", "globex", s.active1},
		{"UnknownOrgIsNotFound", "initech", s.active1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if k, ok := s.listing.Get(tt.org, tt.id); ok {
				t.Errorf("Get(%s, %s) = %+v, want not found", tt.org, tt.id, k)
			}
		})
	}
}

func mustGet(t *testing.T, l *projections.Listing, org, id string) domain.Key {
	t.Helper()
	k, ok := l.Get(org, id)
	if !ok {
		t.Fatalf("Get(%s, %s) not found", org, id)
	}
	return k
}

func TestVerifyIndex(t *testing.T) {
	l := newLedger(t)
	rotatedAt := base.Add(time.Minute)
	// plain: rotated with no grace.
	plain, plainOld := l.create("acme", base, time.Time{})
	plainNew := l.rotate(plain, rotatedAt, 0)
	// graced: rotated keeping the old secret for an hour.
	graced, gracedOld := l.create("acme", base, time.Time{})
	gracedNew := l.rotate(graced, rotatedAt, time.Hour)
	// twice: rotated twice, each time with grace.
	twice, twiceFirst := l.create("acme", base, time.Time{})
	twiceSecond := l.rotate(twice, rotatedAt, time.Hour)
	twiceThird := l.rotate(twice, rotatedAt.Add(time.Minute), time.Hour)
	// revoked: rotated with grace, then revoked during the grace period.
	revoked, revokedOld := l.create("globex", base, time.Time{})
	revokedNew := l.rotate(revoked, rotatedAt, time.Hour)
	l.revoke(revoked, rotatedAt.Add(time.Minute))
	// expiring: expires an hour after creation.
	expiring, expiringSecret := l.create("acme", base, base.Add(time.Hour))
	idx := projections.NewVerifyIndex()
	l.feed(idx)

	graceEnd := rotatedAt.Add(time.Hour)
	soon := rotatedAt.Add(5 * time.Minute)
	badChecksum := plainNew[:len(plainNew)-1] + string(otherBase62(plainNew[len(plainNew)-1]))

	for _, tt := range []struct {
		name       string
		secret     string
		now        time.Time
		code       string
		key        string // "" for no key
		deprecated bool
		expiresAt  time.Time
	}{
		{"BadChecksumIsMalformed", badChecksum, soon, domain.VerifyMalformed, "", false, time.Time{}},
		{"TruncatedIsMalformed", plainNew[:len(plainNew)-1], soon, domain.VerifyMalformed, "", false, time.Time{}},
		{"EmptyIsMalformed", "", soon, domain.VerifyMalformed, "", false, time.Time{}},
		{"HashIsMalformed", domain.HashSecret(plainNew), soon, domain.VerifyMalformed, "", false, time.Time{}},
		{"UnknownWellFormedIsNotFound", l.secret(), soon, domain.VerifyNotFound, "", false, time.Time{}},
		{"CurrentIsValid", plainNew, soon, domain.VerifyValid, plain, false, time.Time{}},
		{"RotatedAwayWithoutGraceIsExpired", plainOld, soon, domain.VerifyExpired, plain, false, time.Time{}},
		{"RotatedAwayAtTheRotationInstantIsExpired", plainOld, rotatedAt, domain.VerifyExpired, plain, false, time.Time{}},
		{"RotatedAwayDuringGraceIsValidAndDeprecated", gracedOld, soon, domain.VerifyValid, graced, true, graceEnd},
		{"RotatedAwayJustBeforeGraceEndIsValid", gracedOld, graceEnd.Add(-time.Microsecond), domain.VerifyValid, graced, true, graceEnd},
		{"RotatedAwayAtGraceEndIsExpired", gracedOld, graceEnd, domain.VerifyExpired, graced, false, time.Time{}},
		{"NewSecretDuringGraceIsValid", gracedNew, soon, domain.VerifyValid, graced, false, time.Time{}},
		{"FirstOfTwoRotationsIsExpired", twiceFirst, soon, domain.VerifyExpired, twice, false, time.Time{}},
		{"SecondOfTwoRotationsIsDeprecated", twiceSecond, soon, domain.VerifyValid, twice, true, rotatedAt.Add(time.Minute + time.Hour)},
		{"ThirdOfTwoRotationsIsValid", twiceThird, soon, domain.VerifyValid, twice, false, time.Time{}},
		{"RevokedOldSecretIsRevoked", revokedOld, soon, domain.VerifyRevoked, revoked, false, time.Time{}},
		{"RevokedCurrentSecretIsRevoked", revokedNew, soon, domain.VerifyRevoked, revoked, false, time.Time{}},
		{"RevokedLongAfterIsRevoked", revokedNew, base.Add(1000 * time.Hour), domain.VerifyRevoked, revoked, false, time.Time{}},
		{"ExpiringBeforeExpiryIsValid", expiringSecret, soon, domain.VerifyValid, expiring, false, base.Add(time.Hour)},
		{"ExpiringAtExpiryIsExpired", expiringSecret, base.Add(time.Hour), domain.VerifyExpired, expiring, false, base.Add(time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := idx.Verify(tt.secret, tt.now)
			if got, want := r.Code, tt.code; got != want {
				t.Fatalf("Code = %q, want %q", got, want)
			}
			if got, want := r.Valid(), tt.code == domain.VerifyValid; got != want {
				t.Errorf("Valid() = %v, want %v", got, want)
			}
			if got, want := r.Deprecated, tt.deprecated; got != want {
				t.Errorf("Deprecated = %v, want %v", got, want)
			}
			if got, want := r.ExpiresAt, tt.expiresAt; !got.Equal(want) {
				t.Errorf("ExpiresAt = %v, want %v", got, want)
			}
			var want domain.Key
			if tt.key != "" {
				want = l.key(tt.key)
				// A verification's key comes without its hashes.
				want.SecretHash, want.PreviousSecretHash, want.Retired, want.LastHash = "", "", nil, ""
			}
			if !reflect.DeepEqual(r.Key, want) {
				t.Errorf("Key:\n got %+v\nwant %+v", r.Key, want)
			}
		})
	}

	t.Run("ResultKeyIsACopy", func(t *testing.T) {
		r := idx.Verify(plainNew, soon)
		r.Key.Revoked, r.Key.SecretHash = true, "sha256:changed"
		if got, want := idx.Verify(plainNew, soon).Code, domain.VerifyValid; got != want {
			t.Errorf("after changing the result: Code = %q, want %q", got, want)
		}
	})
}

// otherBase62 is a base62 character other than c.
func otherBase62(c byte) byte {
	if c == '0' {
		return '1'
	}
	return '0'
}

// TestUnknownTypesAreSkippedButAdvanceLastSeq feeds each projection an
// event of a type it does not know, for a known and for an unknown key.
func TestUnknownTypesAreSkippedButAdvanceLastSeq(t *testing.T) {
	l := newLedger(t)
	id, secret := l.create("acme", base, time.Time{})
	listing, idx := projections.NewListing(), projections.NewVerifyIndex()
	l.feed(listing, idx)
	now := base.Add(time.Minute)
	beforeKey, beforeVerify := mustGet(t, listing, "acme", id), idx.Verify(secret, now)

	for _, e := range []domain.Event{l.unknown("acme", id), l.unknown("acme", domain.NewKeyID()), l.unknown("initech", domain.NewKeyID())} {
		for _, p := range []projections.Projection{listing, idx} {
			if err := p.Apply(e); err != nil {
				t.Errorf("%T.Apply(unknown type) = %v, want nil", p, err)
			}
			if got, want := p.LastSeq(), e.Seq; got != want {
				t.Errorf("%T.LastSeq() = %d, want %d", p, got, want)
			}
		}
	}
	// The key's version is the sequence of its last event, whatever its type.
	beforeKey.Version = l.evs[len(l.evs)-3].Seq
	beforeVerify.Key.Version = beforeKey.Version
	if got := mustGet(t, listing, "acme", id); !reflect.DeepEqual(got, beforeKey) {
		t.Errorf("listing changed beyond its version:\n got %+v\nwant %+v", got, beforeKey)
	}
	if got := idx.Verify(secret, now); !reflect.DeepEqual(got, beforeVerify) {
		t.Errorf("verify changed:\n got %+v\nwant %+v", got, beforeVerify)
	}
	for _, org := range []string{"acme", "initech"} {
		if got, want := len(mustList(t, listing, org, "all", now)), map[string]int{"acme": 1, "initech": 0}[org]; got != want {
			t.Errorf("listing of %s holds %d keys, want %d", org, got, want)
		}
	}
}

func TestLastSeqStartsAtZero(t *testing.T) {
	for _, p := range []projections.Projection{projections.NewListing(), projections.NewVerifyIndex()} {
		if got := p.LastSeq(); got != 0 {
			t.Errorf("%T.LastSeq() = %d, want 0", p, got)
		}
	}
}

// stillSource is a stream that holds nothing yet and delivers nothing: all
// that a runner on it applies comes through Offer.
type stillSource struct{}

func (stillSource) Follow(ctx context.Context, _ uint64, _ func(domain.Event) error) error {
	<-ctx.Done()
	return ctx.Err()
}

func (stillSource) LastSeq(context.Context) (uint64, error) { return 0, nil }

func TestOfferAppliesOnlyTheNextEvent(t *testing.T) {
	l := newLedger(t)
	a, secretA := l.create("acme", base, time.Time{})
	_, secretB := l.create("acme", base, time.Time{})
	l.revoke(a, base.Add(time.Minute))
	evs := l.evs
	table := projections.NewTable()
	r := projections.NewRunner(stillSource{}, natstest.Quiet(), table)

	r.Offer(evs[0])
	if got := r.Applied(); got != 0 {
		t.Fatalf("before Run: applied %d, want 0 (the runner does not know the stream yet)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	for !r.Ready() {
		time.Sleep(time.Millisecond)
	}
	now := base.Add(time.Hour)
	for _, step := range []struct {
		offer       domain.Event
		wantApplied uint64
	}{
		{evs[0], 1},
		{evs[2], 1}, // a gap: left to the feed
		{evs[1], 2},
		{evs[1], 2}, // again: already applied
		{evs[2], 3},
	} {
		r.Offer(step.offer)
		if got := r.Applied(); got != step.wantApplied {
			t.Fatalf("after offering seq %d: applied %d, want %d", step.offer.Seq, got, step.wantApplied)
		}
	}
	if got := table.Index().Verify(secretA, now).Code; got != domain.VerifyRevoked {
		t.Errorf("key a: %s, want REVOKED", got)
	}
	if got := table.Index().Verify(secretB, now).Code; got != domain.VerifyValid {
		t.Errorf("key b: %s, want VALID", got)
	}
}

// forged returns a stored hash equal to secret's in its first 31 bytes
// only.
func forged(secret string) string {
	sum, _ := domain.ParseHash(domain.HashSecret(secret))
	sum[31] ^= 1
	return domain.FormatHash(sum)
}

func TestASecretOnlyNearAStoredHashIsNotFound(t *testing.T) {
	l := newLedger(t)
	probe := l.secret()
	// A key whose current secret's hash shares probe's first 31 bytes.
	l.add(domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyCreated, SchemaVersion: 1, OrgID: "acme", KeyID: domain.NewKeyID(),
		OccurredAt: base, Actor: manager, Data: domain.KeyCreated{Name: "near", SecretHash: forged(probe), Masked: "c8k_****near"}})
	// A key whose oldest secret, rotated away twice, does too.
	retired := l.add(domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyCreated, SchemaVersion: 1, OrgID: "acme", KeyID: domain.NewKeyID(),
		OccurredAt: base, Actor: manager, Data: domain.KeyCreated{Name: "retired", SecretHash: forged(probe), Masked: "c8k_****old1"}})
	l.rotate(retired.KeyID, base.Add(time.Minute), 0)
	l.rotate(retired.KeyID, base.Add(2*time.Minute), 0)
	idx := projections.NewVerifyIndex()
	l.feed(idx)
	r := idx.Verify(probe, base.Add(time.Hour))
	if r.Code != domain.VerifyNotFound || r.Key.ID != "" {
		t.Errorf("a secret only near stored hashes: %s of %q, want NOT_FOUND of no key", r.Code, r.Key.ID)
	}
}

func TestReadsRunAlongsideApply(t *testing.T) {
	l := newLedger(t)
	var secrets []string
	for i := range 200 {
		_, s := l.create([]string{"acme", "globex", "initech"}[i%3], base, time.Time{})
		secrets = append(secrets, s)
	}
	table := projections.NewTable()
	listing, idx := table.Listing(), table.Index()
	done := make(chan struct{})
	for _, org := range []string{"acme", "globex", "initech"} {
		go func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				page, _ := listing.List(org, projections.ListQuery{Limit: 10, Now: base})
				for _, k := range page {
					listing.Get(org, k.ID)
				}
				idx.Verify(secrets[len(page)%len(secrets)], base)
			}
		}()
	}
	l.feed(table)
	close(done)
	if got := len(mustList(t, listing, "acme", "all", base)); got != 67 {
		t.Errorf("acme holds %d keys, want 67", got)
	}
}
