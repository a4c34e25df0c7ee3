package domain_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// newKey builds a key the only way there is, by applying its KeyCreated
// event (at t0, sequence 1). expiresAt zero means never. It returns the key
// and its secret.
func newKey(t *testing.T, expiresAt time.Time) (*domain.Key, string) {
	t.Helper()
	secret := generate(t, "c8k", nil)
	e, err := domain.DecideCreate(domain.CreateKey{
		OrgID: "acme", Name: "ci", Scopes: []string{"read", domain.ScopeManage}, ExpiresAt: expiresAt, By: byAlice,
	}, t0, 0, secret)
	if err != nil {
		t.Fatalf("DecideCreate: %v", err)
	}
	e.Seq = 1
	k := &domain.Key{}
	if err := k.Apply(e); err != nil {
		t.Fatalf("Apply(KeyCreated): %v", err)
	}
	return k, secret
}

// rotate gives k a new secret at the instant at and returns it.
func rotate(t *testing.T, k *domain.Key, at time.Time, grace time.Duration) string {
	t.Helper()
	secret := generate(t, "c8k", nil)
	e, err := k.DecideRotate(domain.RotateKey{GracePeriod: grace, By: byAlice}, at, secret)
	if err != nil {
		t.Fatalf("DecideRotate: %v", err)
	}
	e.Seq = k.Version + 1
	if err := k.Apply(e); err != nil {
		t.Fatalf("Apply(KeyRotated): %v", err)
	}
	return secret
}

// revoke revokes k at the instant at.
func revoke(t *testing.T, k *domain.Key, at time.Time) {
	t.Helper()
	e, err := k.DecideRevoke(domain.RevokeKey{Reason: "test", By: byAlice}, at)
	if err != nil {
		t.Fatalf("DecideRevoke: %v", err)
	}
	e.Seq = k.Version + 1
	if err := k.Apply(e); err != nil {
		t.Fatalf("Apply(KeyRevoked): %v", err)
	}
}

func keysEqual(a, b domain.Key) bool { return reflect.DeepEqual(a, b) }

func TestKeyApply(t *testing.T) {
	t.Run("CreateRotateRevokeEvolvesState", func(t *testing.T) {
		s1, s2 := generate(t, "c8k", nil), generate(t, "c8k", nil)
		created, err := domain.DecideCreate(domain.CreateKey{
			OrgID: "acme", Name: "ci", Scopes: []string{"read"}, ExpiresAt: t0.Add(30 * 24 * time.Hour), By: byAlice,
		}, t0, 0, s1)
		if err != nil {
			t.Fatal(err)
		}
		created.Seq = 3

		k := &domain.Key{}
		if err := k.Apply(created); err != nil {
			t.Fatal(err)
		}
		want := domain.Key{
			ID: created.KeyID, OrgID: "acme", Name: "ci", Scopes: []string{"read"},
			SecretHash: domain.HashSecret(s1), Masked: domain.MaskSecret(s1), ExpiresAt: t0.Add(30 * 24 * time.Hour),
			CreatedAt: t0, CreatedBy: alice, Version: 3,
		}
		if !keysEqual(*k, want) {
			t.Fatalf("after KeyCreated:\n got %+v\nwant %+v", *k, want)
		}

		t1 := t0.Add(time.Hour)
		rotated, err := k.DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: byAlice}, t1, s2)
		if err != nil {
			t.Fatal(err)
		}
		rotated.Seq = 7
		if err := k.Apply(rotated); err != nil {
			t.Fatal(err)
		}
		want.PreviousSecretHash, want.PreviousExpiresAt = domain.HashSecret(s1), t1.Add(time.Hour)
		want.SecretHash, want.Masked = domain.HashSecret(s2), domain.MaskSecret(s2)
		want.RotatedAt, want.Version = t1, 7
		if !keysEqual(*k, want) {
			t.Fatalf("after KeyRotated:\n got %+v\nwant %+v", *k, want)
		}

		t2 := t1.Add(time.Minute)
		revoked, err := k.DecideRevoke(domain.RevokeKey{Reason: "leaked", By: byAlice}, t2)
		if err != nil {
			t.Fatal(err)
		}
		revoked.Seq = 9
		if err := k.Apply(revoked); err != nil {
			t.Fatal(err)
		}
		want.Revoked, want.RevokedAt, want.Version = true, t2, 9
		if !keysEqual(*k, want) {
			t.Fatalf("after KeyRevoked:\n got %+v\nwant %+v", *k, want)
		}
		if got, want := k.Status(t2), domain.StatusRevoked; got != want {
			t.Fatalf("Status = %q, want %q", got, want)
		}

		rebuilt, err := domain.Rebuild([]domain.Event{created, rotated, revoked})
		if err != nil {
			t.Fatal(err)
		}
		if !keysEqual(*rebuilt, *k) {
			t.Fatalf("Rebuild:\n got %+v\nwant %+v", *rebuilt, *k)
		}
	})

	t.Run("VersionFollowsSeq", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		for _, seq := range []uint64{2, 10, 11, 1000} {
			if err := k.Apply(domain.Event{Type: "KeyRenamed", OrgID: k.OrgID, KeyID: k.ID, Seq: seq}); err != nil {
				t.Fatal(err)
			}
			if got, want := k.Version, seq; got != want {
				t.Fatalf("Version = %d, want %d", got, want)
			}
		}
	})

	t.Run("EventWithoutSeqKeepsVersion", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		if err := k.Apply(domain.Event{Type: "KeyRenamed", OrgID: k.OrgID, KeyID: k.ID}); err != nil {
			t.Fatal(err)
		}
		if got, want := k.Version, uint64(1); got != want {
			t.Fatalf("Version = %d, want %d", got, want)
		}
	})

	type unknownData struct{ Name string }
	for _, tt := range []struct {
		name string
		typ  domain.EventType
		data any
	}{
		{"NilData", "KeyRenamed", nil},
		{"UnknownDataType", "KeyRenamed", unknownData{Name: "new"}},
	} {
		t.Run(tt.name+"AdvancesVersionOnly", func(t *testing.T) {
			k, _ := newKey(t, time.Time{})
			want := *k
			want.Version = 5
			if err := k.Apply(domain.Event{ID: "e", Type: tt.typ, OrgID: k.OrgID, KeyID: k.ID, OccurredAt: t0.Add(time.Hour), Data: tt.data, Seq: 5}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !keysEqual(*k, want) {
				t.Fatalf("after Apply:\n got %+v\nwant %+v", *k, want)
			}
		})
	}
}

func TestRebuild(t *testing.T) {
	s1 := generate(t, "c8k", nil)
	created, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "ci", By: byAlice}, t0, 0, s1)
	if err != nil {
		t.Fatal(err)
	}
	created.Seq = 1
	k, err := domain.Rebuild([]domain.Event{created})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := k.DecideRotate(domain.RotateKey{By: byAlice}, t0.Add(time.Hour), "c8k_x")
	if err != nil {
		t.Fatal(err)
	}
	rotated.Seq = 2
	revoked, err := k.DecideRevoke(domain.RevokeKey{By: byAlice}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	revoked.Seq = 2
	other, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "other", By: byAlice}, t0, 0, s1)
	if err != nil {
		t.Fatal(err)
	}
	otherRotated, otherOrgRotated := rotated, rotated
	otherRotated.KeyID = other.KeyID
	otherOrgRotated.OrgID = "globex"

	for _, tt := range []struct {
		name   string
		events []domain.Event
	}{
		{"RotatedBeforeCreatedIsError", []domain.Event{rotated, created}},
		{"RevokedBeforeCreatedIsError", []domain.Event{revoked}},
		{"CreatedTwiceIsError", []domain.Event{created, created}},
		{"CreatedThenAnotherKeyCreatedIsError", []domain.Event{created, other}},
		{"EventForAnotherKeyIsError", []domain.Event{created, otherRotated}},
		{"EventForAnotherOrgIsError", []domain.Event{created, otherOrgRotated}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := domain.Rebuild(tt.events)
			if err == nil {
				t.Fatalf("Rebuild = %+v, want an error", k)
			}
			if k != nil {
				t.Fatalf("Rebuild = %+v with an error, want nil", k)
			}
			// A corrupt stream is not the caller's fault.
			wantCode(t, err, domain.EINTERNAL)
		})
	}

	t.Run("ApplyRefusesEventForAnotherKey", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		before := *k
		e := rotated
		e.OrgID, e.KeyID = k.OrgID, other.KeyID
		if err := k.Apply(e); err == nil {
			t.Fatal("Apply of another key's event: no error")
		}
		if !keysEqual(*k, before) {
			t.Fatalf("failed Apply changed the key:\n got %+v\nwant %+v", *k, before)
		}
	})

	for _, tt := range []struct {
		name   string
		events []domain.Event
	}{
		{"NoEventsIsNotFound", nil},
		{"OnlyUnknownEventsIsNotFound", []domain.Event{{Type: "KeyRenamed", OrgID: "acme", KeyID: created.KeyID, Seq: 1}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := domain.Rebuild(tt.events)
			wantCode(t, err, domain.ENOTFOUND)
			if k != nil {
				t.Fatalf("Rebuild = %+v, want nil", k)
			}
		})
	}

	t.Run("UnknownEventBetweenKnownOnesIsIgnored", func(t *testing.T) {
		unknown := domain.Event{Type: "KeyRenamed", OrgID: "acme", KeyID: created.KeyID, Seq: 2}
		r := rotated
		r.Seq = 3
		k, err := domain.Rebuild([]domain.Event{created, unknown, r})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := k.Version, uint64(3); got != want {
			t.Fatalf("Version = %d, want %d", got, want)
		}
		if got, want := k.SecretHash, domain.HashSecret("c8k_x"); got != want {
			t.Fatalf("SecretHash = %q, want %q", got, want)
		}
	})
}

func TestKeyStatus(t *testing.T) {
	expiring, _ := newKey(t, t0.Add(time.Hour))
	forever, _ := newKey(t, time.Time{})
	revokedExpiring, _ := newKey(t, t0.Add(time.Hour))
	revoke(t, revokedExpiring, t0.Add(time.Minute))

	for _, tt := range []struct {
		name string
		key  *domain.Key
		now  time.Time
		want domain.Status
	}{
		{"NoExpiryIsActive", forever, t0.AddDate(100, 0, 0), domain.StatusActive},
		{"OneNanosecondBeforeExpiryIsActive", expiring, t0.Add(time.Hour - time.Nanosecond), domain.StatusActive},
		{"AtExpiryIsExpired", expiring, t0.Add(time.Hour), domain.StatusExpired},
		{"AfterExpiryIsExpired", expiring, t0.Add(2 * time.Hour), domain.StatusExpired},
		{"RevokedBeforeExpiryIsRevoked", revokedExpiring, t0.Add(30 * time.Minute), domain.StatusRevoked},
		{"RevokedAfterExpiryIsRevoked", revokedExpiring, t0.Add(2 * time.Hour), domain.StatusRevoked},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.Status(tt.now); got != tt.want {
				t.Fatalf("Status(%v) = %q, want %q", tt.now, got, tt.want)
			}
		})
	}
}

func TestKeyHasScope(t *testing.T) {
	k, _ := newKey(t, time.Time{})
	for _, tt := range []struct {
		scope string
		want  bool
	}{
		{"read", true},
		{domain.ScopeManage, true},
		{"write", false},
		{"keys", false},
		{"", false},
	} {
		if got := k.HasScope(tt.scope); got != tt.want {
			t.Errorf("HasScope(%q) = %v, want %v (scopes %q)", tt.scope, got, tt.want, k.Scopes)
		}
	}
	if !slices.Equal(k.Scopes, []string{"read", domain.ScopeManage}) {
		t.Fatalf("Scopes = %q", k.Scopes)
	}
}

type judgeCase struct {
	name   string
	secret string
	now    time.Time
	want   domain.Verdict
}

func checkJudge(t *testing.T, k *domain.Key, cases []judgeCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got := k.Judge(domain.HashSecret(tt.secret), tt.now)
			if got.Code != tt.want.Code || got.Deprecated != tt.want.Deprecated || !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
				t.Fatalf("Judge at %v = %+v, want %+v", tt.now, got, tt.want)
			}
			if got, want := got.Valid(), tt.want.Code == domain.VerifyValid; got != want {
				t.Fatalf("Valid() = %v, want %v", got, want)
			}
		})
	}
}

func TestKeyJudge(t *testing.T) {
	const grace = time.Hour
	t1 := t0.Add(10 * time.Minute) // first rotation
	end := t1.Add(grace)           // end of its grace period

	t.Run("RotationWithGrace", func(t *testing.T) {
		k, s1 := newKey(t, time.Time{})
		s2 := rotate(t, k, t1, grace)
		valid := domain.Verdict{Code: domain.VerifyValid}
		deprecated := domain.Verdict{Code: domain.VerifyValid, Deprecated: true, ExpiresAt: end}
		expired := domain.Verdict{Code: domain.VerifyExpired}
		checkJudge(t, k, []judgeCase{
			{"CurrentSecretIsValid", s2, t1, valid},
			{"CurrentSecretIsValidLongAfter", s2, t1.AddDate(10, 0, 0), valid},
			{"PreviousSecretAtRotationIsDeprecated", s1, t1, deprecated},
			{"PreviousSecretOneNanosecondBeforeGraceEndIsDeprecated", s1, end.Add(-time.Nanosecond), deprecated},
			{"PreviousSecretAtGraceEndIsExpired", s1, end, expired},
			{"PreviousSecretAfterGraceEndIsExpired", s1, end.Add(time.Hour), expired},
			{"UnknownSecretIsNotFound", "c8k_never", t1, domain.Verdict{Code: domain.VerifyNotFound}},
		})
	})

	t.Run("RotationWithoutGrace", func(t *testing.T) {
		k, s1 := newKey(t, time.Time{})
		s2 := rotate(t, k, t1, 0)
		checkJudge(t, k, []judgeCase{
			{"CurrentSecretIsValid", s2, t1, domain.Verdict{Code: domain.VerifyValid}},
			{"PreviousSecretAtRotationIsExpired", s1, t1, domain.Verdict{Code: domain.VerifyExpired}},
			{"PreviousSecretBeforeRotationInstantIsExpired", s1, t1.Add(-time.Nanosecond), domain.Verdict{Code: domain.VerifyExpired}},
			{"PreviousSecretLaterIsExpired", s1, t1.Add(time.Nanosecond), domain.Verdict{Code: domain.VerifyExpired}},
		})
	})

	t.Run("TwoRotations", func(t *testing.T) {
		k, s1 := newKey(t, time.Time{})
		s2 := rotate(t, k, t1, grace)
		t2 := t1.Add(10 * time.Minute) // within s1's grace
		s3 := rotate(t, k, t2, grace)
		checkJudge(t, k, []judgeCase{
			{"NewestSecretIsValid", s3, t2, domain.Verdict{Code: domain.VerifyValid}},
			{"PreviousSecretIsDeprecated", s2, t2, domain.Verdict{Code: domain.VerifyValid, Deprecated: true, ExpiresAt: t2.Add(grace)}},
			{"SecretTwoRotationsOldIsExpiredDuringNewestGrace", s1, t2, domain.Verdict{Code: domain.VerifyExpired}},
			{"SecretTwoRotationsOldIsExpiredBeforeItsOwnGraceEnd", s1, end.Add(-time.Nanosecond), domain.Verdict{Code: domain.VerifyExpired}},
		})
	})

	t.Run("RevokedKey", func(t *testing.T) {
		k, s1 := newKey(t, t0.Add(24*time.Hour))
		s2 := rotate(t, k, t1, grace)
		t2 := t1.Add(time.Minute)
		s3 := rotate(t, k, t2, grace)
		t3 := t2.Add(time.Minute) // within s2's grace
		revoke(t, k, t3)
		revoked := domain.Verdict{Code: domain.VerifyRevoked}
		checkJudge(t, k, []judgeCase{
			{"CurrentSecretIsRevoked", s3, t3, revoked},
			{"SecretInGraceIsRevoked", s2, t3, revoked},
			{"OldestSecretIsRevoked", s1, t3, revoked},
			{"CurrentSecretIsRevokedAfterKeyExpiry", s3, t0.Add(48 * time.Hour), revoked},
			{"CurrentSecretIsRevokedAtAnyInstant", s3, t0, revoked},
		})
	})

	t.Run("KeyWithExpiry", func(t *testing.T) {
		exp := t0.Add(24 * time.Hour)
		k, s1 := newKey(t, exp)
		s2 := rotate(t, k, exp.Add(-30*time.Minute), grace) // grace would outlive the key
		checkJudge(t, k, []judgeCase{
			{"CurrentSecretOneNanosecondBeforeExpiryIsValid", s2, exp.Add(-time.Nanosecond), domain.Verdict{Code: domain.VerifyValid, ExpiresAt: exp}},
			{"CurrentSecretAtExpiryIsExpired", s2, exp, domain.Verdict{Code: domain.VerifyExpired, ExpiresAt: exp}},
			{"CurrentSecretAfterExpiryIsExpired", s2, exp.Add(time.Hour), domain.Verdict{Code: domain.VerifyExpired, ExpiresAt: exp}},
			{"PreviousSecretGraceEndsWithTheKey", s1, exp.Add(-time.Nanosecond), domain.Verdict{Code: domain.VerifyValid, Deprecated: true, ExpiresAt: exp}},
			{"PreviousSecretAtKeyExpiryIsExpired", s1, exp, domain.Verdict{Code: domain.VerifyExpired, ExpiresAt: exp}},
		})
	})

	t.Run("GraceEndingBeforeKeyExpiryIsKept", func(t *testing.T) {
		exp := t0.Add(24 * time.Hour)
		k, s1 := newKey(t, exp)
		rotate(t, k, t1, grace)
		checkJudge(t, k, []judgeCase{
			{"PreviousSecretExpiresAtGraceEnd", s1, t1, domain.Verdict{Code: domain.VerifyValid, Deprecated: true, ExpiresAt: end}},
		})
	})
}

func TestKeyRemembersABoundedNumberOfReplacedSecrets(t *testing.T) {
	const rotations = 40
	k, first := newKey(t, time.Time{})
	secrets := []string{first}
	var at []time.Time // at[i]: when secrets[i] was replaced
	for i := range rotations {
		when := t0.Add(time.Duration(i+1) * time.Minute)
		secrets = append(secrets, rotate(t, k, when, 0))
		at = append(at, when)
	}
	if got, want := len(k.Retired), domain.MaxReplacedSecrets-1; got != want {
		t.Fatalf("after %d rotations the key holds %d retired secrets, want %d", rotations, got, want)
	}
	now := at[rotations-1]
	newest := rotations - 1 // secrets[newest] is the previous one
	var cases []judgeCase
	for i := range rotations {
		want := domain.Verdict{Code: domain.VerifyExpired}
		if newest-i >= domain.MaxReplacedSecrets {
			want = domain.Verdict{Code: domain.VerifyNotFound}
		}
		cases = append(cases, judgeCase{fmt.Sprintf("Replaced%dRotationsAgo", newest-i+1), secrets[i], now, want})
	}
	cases = append(cases,
		judgeCase{"CurrentIsValid", secrets[rotations], now, domain.Verdict{Code: domain.VerifyValid}},
		judgeCase{"CurrentIsValidPastTheMemory", secrets[rotations], now.Add(10 * domain.ReplacedSecretMemory), domain.Verdict{Code: domain.VerifyValid}},
		judgeCase{"PreviousJustBeforeTheMemoryEnds", secrets[newest], at[newest].Add(domain.ReplacedSecretMemory - time.Nanosecond), domain.Verdict{Code: domain.VerifyExpired}},
		judgeCase{"PreviousWhenTheMemoryEnds", secrets[newest], at[newest].Add(domain.ReplacedSecretMemory), domain.Verdict{Code: domain.VerifyNotFound}},
		judgeCase{"OldestRememberedJustBeforeItsMemoryEnds", secrets[newest-15], at[newest-15].Add(domain.ReplacedSecretMemory - time.Nanosecond), domain.Verdict{Code: domain.VerifyExpired}},
		judgeCase{"OldestRememberedWhenItsMemoryEnds", secrets[newest-15], at[newest-15].Add(domain.ReplacedSecretMemory), domain.Verdict{Code: domain.VerifyNotFound}},
	)
	checkJudge(t, k, cases)

	revoke(t, k, now.Add(time.Minute))
	checkJudge(t, k, []judgeCase{
		{"RevokedCurrentIsRevoked", secrets[rotations], now.Add(10 * domain.ReplacedSecretMemory), domain.Verdict{Code: domain.VerifyRevoked}},
		{"RevokedRememberedIsRevoked", secrets[newest-15], now, domain.Verdict{Code: domain.VerifyRevoked}},
		{"RevokedForgottenIsNotFound", secrets[newest-16], now, domain.Verdict{Code: domain.VerifyNotFound}},
	})
}

func TestRemembersReplaced(t *testing.T) {
	replaced := t0
	for _, tt := range []struct {
		name  string
		newer int
		now   time.Time
		want  bool
	}{
		{"LastReplacedAtOnce", 0, replaced, true},
		{"FifteenNewerBeforeTheEnd", domain.MaxReplacedSecrets - 1, replaced.Add(domain.ReplacedSecretMemory - time.Nanosecond), true},
		{"SixteenNewer", domain.MaxReplacedSecrets, replaced, false},
		{"AtTheEnd", 0, replaced.Add(domain.ReplacedSecretMemory), false},
	} {
		if got := domain.RemembersReplaced(tt.newer, replaced, tt.now); got != tt.want {
			t.Errorf("%s: RemembersReplaced(%d, %v) = %v, want %v", tt.name, tt.newer, tt.now, got, tt.want)
		}
	}
}
