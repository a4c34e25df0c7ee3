package domain_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
)

// t0 is a fixed instant, already to the microsecond as Keys makes it.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC)

var alice = domain.Actor{Kind: domain.ActorUser, ID: "u_1", Name: "Alice"}

// byAlice is alice signed in as a manager of acme.
var byAlice = domain.PersonPrincipal(alice.ID, alice.Name, map[string]string{"acme": domain.RoleManager})

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err: %v), want %q", got, err, code)
	}
}

func TestValidateOrgID(t *testing.T) {
	for _, org := range []string{"acme", "a", "0", "0-x", "acme-corp", "a-", "9lives", "a" + strings.Repeat("b", 62)} {
		if err := domain.ValidateOrgID(org); err != nil {
			t.Errorf("ValidateOrgID(%q) = %v, want nil", org, err)
		}
	}
	for _, tt := range []struct {
		name string
		org  string
	}{
		{"Empty", ""},
		{"UpperCase", "Acme"},
		{"Dot", "ac.me"},
		{"Star", "*"},
		{"StarInside", "ac*me"},
		{"GreaterThan", "acme>"},
		{"Space", "ac me"},
		{"TrailingNewline", "acme\n"},
		{"Underscore", "ac_me"},
		{"LeadingDash", "-acme"},
		{"SixtyFourChars", strings.Repeat("a", 64)},
		{"Unicode", "açme"},
		{"FullWidthLetter", "ａcme"},
	} {
		t.Run(tt.name+"IsInvalid", func(t *testing.T) {
			wantCode(t, domain.ValidateOrgID(tt.org), domain.EINVALID)
		})
	}
}

func TestValidateKeyID(t *testing.T) {
	const good = "key_01ARZ3NDEKTSV4RRFFQ69G5FAV"
	for _, id := range []string{good, domain.NewKeyID(), "key_00000000000000000000000000", "key_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"} {
		if err := domain.ValidateKeyID(id); err != nil {
			t.Errorf("ValidateKeyID(%q) = %v, want nil", id, err)
		}
	}
	for _, tt := range []struct {
		name string
		id   string
	}{
		{"Empty", ""},
		{"PrefixOnly", "key_"},
		{"LowerCaseULID", "key_" + strings.ToLower(good[4:])},
		{"OneLowerCaseLetter", good[:len(good)-1] + "v"},
		{"MissingPrefix", good[4:]},
		{"UpperCasePrefix", "KEY_" + good[4:]},
		{"DashForUnderscore", "key-" + good[4:]},
		{"OneCharacterShort", good[:len(good)-1]},
		{"OneCharacterLong", good + "0"},
		{"LetterU", good[:len(good)-1] + "U"},
		{"LetterI", good[:len(good)-1] + "I"},
		{"Punctuation", good[:len(good)-1] + "!"},
		{"Overflow", "key_8ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
		{"TrailingNewline", good + "\n"},
	} {
		t.Run(tt.name+"IsInvalid", func(t *testing.T) {
			wantCode(t, domain.ValidateKeyID(tt.id), domain.EINVALID)
		})
	}
}

func TestNewIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		kid, eid := domain.NewKeyID(), domain.NewEventID()
		if err := domain.ValidateKeyID(kid); err != nil {
			t.Fatalf("ValidateKeyID(NewKeyID() = %q) = %v", kid, err)
		}
		if _, err := ulid.ParseStrict(eid); err != nil || eid != strings.ToUpper(eid) {
			t.Fatalf("NewEventID() = %q, want an upper-case ULID (%v)", eid, err)
		}
		if seen[kid] || seen[eid] {
			t.Fatalf("id repeated: %q or %q", kid, eid)
		}
		seen[kid], seen[eid] = true, true
	}
}

func TestValidateName(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want string
	}{
		{"Plain", "prod", "prod"},
		{"TrimmedSpaces", "  prod  ", "prod"},
		{"TrimmedTabsAndNewlines", "\t\nprod\r\n", "prod"},
		{"InnerSpaceKept", "ci deploy", "ci deploy"},
		{"OneChar", "x", "x"},
		{"HundredChars", strings.Repeat("a", 100), strings.Repeat("a", 100)},
		{"HundredMultibyteRunes", strings.Repeat("é", 100), strings.Repeat("é", 100)},
		{"HundredCJKRunes", strings.Repeat("鍵", 100), strings.Repeat("鍵", 100)},
		{"HundredAfterTrim", "  " + strings.Repeat("a", 100) + "  ", strings.Repeat("a", 100)},
		{"Emoji", "🔑 deploy", "🔑 deploy"},
	} {
		t.Run(tt.name+"IsValid", func(t *testing.T) {
			got, err := domain.ValidateName(tt.in)
			if err != nil {
				t.Fatalf("ValidateName(%q) = %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ValidateName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		in   string
	}{
		{"Empty", ""},
		{"OnlySpaces", "   "},
		{"OnlyWhitespace", " \t\n\r "},
		{"HundredOneChars", strings.Repeat("a", 101)},
		{"HundredOneMultibyteRunes", strings.Repeat("é", 101)},
		{"NUL", "a\x00b"},
		{"OnlyNUL", "\x00"},
		{"Newline", "a\nb"},
		{"Tab", "a\tb"},
		{"DEL", "a\x7fb"},
		{"TrailingDEL", "ab\x7f"},
		{"Escape", "a\x1b[31mb"},
		{"C1Control", "a\u0085b"},
		{"InvalidUTF8", "a\xffb"},
	} {
		t.Run(tt.name+"IsInvalid", func(t *testing.T) {
			got, err := domain.ValidateName(tt.in)
			wantCode(t, err, domain.EINVALID)
			if got != "" {
				t.Fatalf("ValidateName(%q) = %q with an error, want empty", tt.in, got)
			}
		})
	}
}

func TestValidateScopes(t *testing.T) {
	many := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("scope%d", i)
		}
		return s
	}
	for _, tt := range []struct {
		name string
		in   []string
		want []string
	}{
		{"None", nil, []string{}},
		{"Some", []string{domain.ScopeManage, "read"}, []string{domain.ScopeManage, "read"}},
		{"AllAllowedCharacters", []string{"a0:._-z"}, []string{"a0:._-z"}},
		{"OneLetter", []string{"a"}, []string{"a"}},
		{"SixtyFourChars", []string{strings.Repeat("a", 64)}, []string{strings.Repeat("a", 64)}},
		{"DuplicatesDroppedKeepingOrder", []string{"b", "a", "b", "c", "a"}, []string{"b", "a", "c"}},
		{"ThirtyTwo", many(32), many(32)},
		{"ThirtyTwoDistinctAmongThirtyThree", append(many(32), "scope0"), many(32)},
	} {
		t.Run(tt.name+"IsValid", func(t *testing.T) {
			got, err := domain.ValidateScopes(tt.in)
			if err != nil {
				t.Fatalf("ValidateScopes(%q) = %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ValidateScopes(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		in   []string
	}{
		{"ThirtyThree", many(33)},
		{"Empty", []string{""}},
		{"UpperCase", []string{"Read"}},
		{"LeadingDigit", []string{"1read"}},
		{"LeadingColon", []string{":read"}},
		{"Space", []string{"read write"}},
		{"Star", []string{"keys:*"}},
		{"GreaterThan", []string{"keys>"}},
		{"Slash", []string{"keys/read"}},
		{"SixtyFiveChars", []string{strings.Repeat("a", 65)}},
		{"Unicode", []string{"lécture"}},
		{"TrailingNewline", []string{"read\n"}},
		{"OneBadAmongGood", []string{"read", "Write", "admin"}},
	} {
		t.Run(tt.name+"IsInvalid", func(t *testing.T) {
			got, err := domain.ValidateScopes(tt.in)
			wantCode(t, err, domain.EINVALID)
			if got != nil {
				t.Fatalf("ValidateScopes(%q) = %q with an error, want nil", tt.in, got)
			}
		})
	}
}

func TestDecideCreate(t *testing.T) {
	secret := generate(t, "c8k", nil)
	valid := func() domain.CreateKey {
		return domain.CreateKey{
			OrgID: "acme", Name: "  deploy bot ", Scopes: []string{"read", "write", "read"},
			ExpiresAt: t0.Add(24 * time.Hour), By: byAlice,
		}
	}

	t.Run("ValidCommandGivesKeyCreated", func(t *testing.T) {
		e, err := domain.DecideCreate(valid(), t0, 0, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Type, domain.TypeKeyCreated; got != want {
			t.Errorf("Type = %q, want %q", got, want)
		}
		if got, want := e.SchemaVersion, domain.SchemaVersion; got != want {
			t.Errorf("SchemaVersion = %d, want %d", got, want)
		}
		if got, want := e.OrgID, "acme"; got != want {
			t.Errorf("OrgID = %q, want %q", got, want)
		}
		if err := domain.ValidateKeyID(e.KeyID); err != nil {
			t.Errorf("KeyID %q: %v", e.KeyID, err)
		}
		if _, err := ulid.ParseStrict(e.ID); err != nil || e.ID != strings.ToUpper(e.ID) {
			t.Errorf("ID = %q, want an upper-case ULID (%v)", e.ID, err)
		}
		if got, want := e.OccurredAt, t0; !got.Equal(want) {
			t.Errorf("OccurredAt = %v, want %v", got, want)
		}
		if got, want := e.Actor, alice; got != want {
			t.Errorf("Actor = %+v, want %+v", got, want)
		}
		if got, want := e.Seq, uint64(0); got != want {
			t.Errorf("Seq = %d, want %d before append", got, want)
		}
		d, ok := e.Data.(domain.KeyCreated)
		if !ok {
			t.Fatalf("Data is %T, want domain.KeyCreated", e.Data)
		}
		if got, want := d.Name, "deploy bot"; got != want {
			t.Errorf("Name = %q, want %q", got, want)
		}
		if got, want := d.Scopes, []string{"read", "write"}; !slices.Equal(got, want) {
			t.Errorf("Scopes = %q, want %q", got, want)
		}
		if got, want := d.SecretHash, domain.HashSecret(secret); got != want {
			t.Errorf("SecretHash = %q, want %q", got, want)
		}
		if got, want := d.Masked, domain.MaskSecret(secret); got != want {
			t.Errorf("Masked = %q, want %q", got, want)
		}
		if got, want := d.ExpiresAt, t0.Add(24*time.Hour); !got.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v", got, want)
		}
		if s := fmt.Sprintf("%+v", e); strings.Contains(s, secret) {
			t.Errorf("event holds the full secret: %s", s)
		}
	})

	t.Run("EventsHaveFreshIDs", func(t *testing.T) {
		a, err := domain.DecideCreate(valid(), t0, 0, secret)
		if err != nil {
			t.Fatal(err)
		}
		b, err := domain.DecideCreate(valid(), t0, 0, secret)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID == b.ID || a.KeyID == b.KeyID {
			t.Fatalf("two creates share ids: %q/%q and %q/%q", a.ID, a.KeyID, b.ID, b.KeyID)
		}
	})

	t.Run("ExpiresAtIsUTCToTheMicrosecond", func(t *testing.T) {
		cmd := valid()
		cmd.ExpiresAt = time.Date(2026, 11, 27, 12, 0, 0, 987654321, time.FixedZone("CET", 3600))
		e, err := domain.DecideCreate(cmd, t0, 0, secret)
		if err != nil {
			t.Fatal(err)
		}
		got := e.Data.(domain.KeyCreated).ExpiresAt
		if want := time.Date(2026, 11, 27, 11, 0, 0, 987654000, time.UTC); got != want {
			t.Fatalf("ExpiresAt = %v, want %v", got, want)
		}
	})

	const maxExpiry = 365 * 24 * time.Hour
	for _, tt := range []struct {
		name      string
		expiresAt time.Time
		maxExpiry time.Duration
		code      string
	}{
		{"NoExpiryIsValid", time.Time{}, maxExpiry, ""},
		{"ExpiryInAnHourIsValid", t0.Add(time.Hour), maxExpiry, ""},
		{"ExpiryAtMaxIsValid", t0.Add(maxExpiry), maxExpiry, ""},
		{"ExpiryFarAheadWithoutMaxIsValid", t0.AddDate(100, 0, 0), 0, ""},
		{"ExpiryInThePastIsInvalid", t0.Add(-time.Hour), maxExpiry, domain.EINVALID},
		{"ExpiryOneMicrosecondAgoIsInvalid", t0.Add(-time.Microsecond), maxExpiry, domain.EINVALID},
		{"ExpiryNowIsInvalid", t0, maxExpiry, domain.EINVALID},
		{"ExpiryJustBeyondMaxIsInvalid", t0.Add(maxExpiry + time.Microsecond), maxExpiry, domain.EINVALID},
		{"ExpiryFarBeyondMaxIsInvalid", t0.AddDate(10, 0, 0), maxExpiry, domain.EINVALID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := valid()
			cmd.ExpiresAt = tt.expiresAt
			e, err := domain.DecideCreate(cmd, t0, tt.maxExpiry, secret)
			wantCode(t, err, tt.code)
			if err != nil {
				return
			}
			if got, want := e.Data.(domain.KeyCreated).ExpiresAt, tt.expiresAt; !got.Equal(want) {
				t.Fatalf("ExpiresAt = %v, want %v", got, want)
			}
		})
	}

	for _, tt := range []struct {
		name string
		edit func(*domain.CreateKey)
	}{
		{"BadOrg", func(c *domain.CreateKey) { c.OrgID = "Acme.corp" }},
		{"EmptyOrg", func(c *domain.CreateKey) { c.OrgID = "" }},
		{"EmptyName", func(c *domain.CreateKey) { c.Name = " " }},
		{"LongName", func(c *domain.CreateKey) { c.Name = strings.Repeat("n", 101) }},
		{"ControlInName", func(c *domain.CreateKey) { c.Name = "a\x00b" }},
		{"BadScope", func(c *domain.CreateKey) { c.Scopes = []string{"Keys:*"} }},
		{"TooManyScopes", func(c *domain.CreateKey) {
			c.Scopes = nil
			for i := range 33 {
				c.Scopes = append(c.Scopes, fmt.Sprintf("s%d", i))
			}
		}},
	} {
		t.Run(tt.name+"IsInvalid", func(t *testing.T) {
			cmd := valid()
			tt.edit(&cmd)
			_, err := domain.DecideCreate(cmd, t0, 0, secret)
			wantCode(t, err, domain.EINVALID)
		})
	}

	// An expiry less than a microsecond ahead passes the "in the future"
	// check, is then truncated to the microsecond, and the key is born
	// expired.
	t.Run("SubMicrosecondExpiryIsInvalidOrActive", func(t *testing.T) {
		cmd := valid()
		cmd.ExpiresAt = t0.Add(500 * time.Nanosecond)
		e, err := domain.DecideCreate(cmd, t0, 0, secret)
		if err != nil {
			wantCode(t, err, domain.EINVALID)
			return
		}
		e.Seq = 1
		k, err := domain.Rebuild([]domain.Event{e})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := k.Status(t0), domain.StatusActive; got != want {
			t.Fatalf("key accepted with expires_at %v has Status(now) = %q, want %q", cmd.ExpiresAt, got, want)
		}
	})
}

func TestDecideRotate(t *testing.T) {
	t.Run("GivesKeyRotatedWithNewSecret", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		before := *k
		secret := generate(t, "c8k", nil)
		now := t0.Add(time.Hour)
		e, err := k.DecideRotate(domain.RotateKey{GracePeriod: 10 * time.Minute, IfVersion: k.Version, By: byAlice}, now, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Type, domain.TypeKeyRotated; got != want {
			t.Errorf("Type = %q, want %q", got, want)
		}
		if e.OrgID != k.OrgID || e.KeyID != k.ID {
			t.Errorf("event for %s/%s, want %s/%s", e.OrgID, e.KeyID, k.OrgID, k.ID)
		}
		if _, err := ulid.ParseStrict(e.ID); err != nil {
			t.Errorf("ID = %q: %v", e.ID, err)
		}
		if got, want := e.SchemaVersion, domain.SchemaVersion; got != want {
			t.Errorf("SchemaVersion = %d, want %d", got, want)
		}
		if !e.OccurredAt.Equal(now) || e.Actor != alice {
			t.Errorf("OccurredAt, Actor = %v, %+v; want %v, %+v", e.OccurredAt, e.Actor, now, alice)
		}
		d, ok := e.Data.(domain.KeyRotated)
		if !ok {
			t.Fatalf("Data is %T, want domain.KeyRotated", e.Data)
		}
		if got, want := d.SecretHash, domain.HashSecret(secret); got != want {
			t.Errorf("SecretHash = %q, want %q", got, want)
		}
		if got, want := d.Masked, domain.MaskSecret(secret); got != want {
			t.Errorf("Masked = %q, want %q", got, want)
		}
		if got, want := d.PreviousSecretExpiresAt, now.Add(10*time.Minute); !got.Equal(want) {
			t.Errorf("PreviousSecretExpiresAt = %v, want %v", got, want)
		}
		if !keysEqual(*k, before) {
			t.Errorf("DecideRotate changed the key:\n got %+v\nwant %+v", *k, before)
		}
	})

	for _, tt := range []struct {
		name  string
		grace time.Duration
		code  string
	}{
		{"ZeroGraceIsValid", 0, ""},
		{"OneSecondGraceIsValid", time.Second, ""},
		{"SevenDayGraceIsValid", 7 * 24 * time.Hour, ""},
		{"NegativeGraceIsInvalid", -time.Nanosecond, domain.EINVALID},
		{"VeryNegativeGraceIsInvalid", -time.Hour, domain.EINVALID},
		{"GraceJustOverSevenDaysIsInvalid", 7*24*time.Hour + time.Nanosecond, domain.EINVALID},
		{"EightDayGraceIsInvalid", 8 * 24 * time.Hour, domain.EINVALID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newKey(t, time.Time{})
			e, err := k.DecideRotate(domain.RotateKey{GracePeriod: tt.grace, By: byAlice}, t0, "c8k_new")
			wantCode(t, err, tt.code)
			if err != nil {
				return
			}
			got := e.Data.(domain.KeyRotated).PreviousSecretExpiresAt
			if tt.grace == 0 {
				if !got.IsZero() {
					t.Fatalf("PreviousSecretExpiresAt = %v, want zero (ends at once)", got)
				}
				return
			}
			if want := t0.Add(tt.grace); !got.Equal(want) {
				t.Fatalf("PreviousSecretExpiresAt = %v, want %v", got, want)
			}
		})
	}

	t.Run("RevokedKeyIsKeyRevoked", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		revoke(t, k, t0.Add(time.Minute))
		_, err := k.DecideRotate(domain.RotateKey{By: byAlice}, t0.Add(time.Hour), "c8k_new")
		wantCode(t, err, domain.EKEYREVOKED)
	})

	t.Run("ExpiredKeyIsConflict", func(t *testing.T) {
		k, _ := newKey(t, t0.Add(time.Hour))
		for _, now := range []time.Time{t0.Add(time.Hour), t0.Add(48 * time.Hour)} {
			_, err := k.DecideRotate(domain.RotateKey{By: byAlice}, now, "c8k_new")
			wantCode(t, err, domain.ECONFLICT)
		}
	})

	t.Run("KeyOneNanosecondBeforeExpiryRotates", func(t *testing.T) {
		k, _ := newKey(t, t0.Add(time.Hour))
		_, err := k.DecideRotate(domain.RotateKey{By: byAlice}, t0.Add(time.Hour-time.Nanosecond), "c8k_new")
		wantCode(t, err, "")
	})

	for _, tt := range []struct {
		name      string
		ifVersion func(v uint64) uint64
		code      string
	}{
		{"NoIfVersionIsValid", func(uint64) uint64 { return 0 }, ""},
		{"CurrentIfVersionIsValid", func(v uint64) uint64 { return v }, ""},
		{"OlderIfVersionIsPreconditionFailed", func(v uint64) uint64 { return v - 1 }, domain.EPRECONDITION},
		{"NewerIfVersionIsPreconditionFailed", func(v uint64) uint64 { return v + 1 }, domain.EPRECONDITION},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newKey(t, time.Time{})
			rotate(t, k, t0.Add(time.Minute), 0)
			_, err := k.DecideRotate(domain.RotateKey{IfVersion: tt.ifVersion(k.Version), By: byAlice}, t0.Add(time.Hour), "c8k_new")
			wantCode(t, err, tt.code)
		})
	}
}

func TestDecideRevoke(t *testing.T) {
	t.Run("GivesKeyRevokedWithTrimmedReason", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		before := *k
		now := t0.Add(time.Hour)
		e, err := k.DecideRevoke(domain.RevokeKey{Reason: "  leaked in CI log \n", IfVersion: k.Version, By: byAlice}, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Type, domain.TypeKeyRevoked; got != want {
			t.Errorf("Type = %q, want %q", got, want)
		}
		if e.OrgID != k.OrgID || e.KeyID != k.ID || !e.OccurredAt.Equal(now) || e.Actor != alice {
			t.Errorf("event %+v, want for %s/%s at %v by %+v", e, k.OrgID, k.ID, now, alice)
		}
		if got, want := e.Data, any(domain.KeyRevoked{Reason: "leaked in CI log"}); got != want {
			t.Errorf("Data = %#v, want %#v", got, want)
		}
		if !keysEqual(*k, before) {
			t.Errorf("DecideRevoke changed the key:\n got %+v\nwant %+v", *k, before)
		}
	})

	for _, tt := range []struct {
		name   string
		reason string
		code   string
	}{
		{"EmptyReasonIsValid", "", ""},
		{"FiveHundredCharsIsValid", strings.Repeat("r", 500), ""},
		{"FiveHundredMultibyteRunesIsValid", strings.Repeat("é", 500), ""},
		{"FiveHundredOneCharsIsInvalid", strings.Repeat("r", 501), domain.EINVALID},
		{"NULIsInvalid", "a\x00b", domain.EINVALID},
		{"NewlineInsideIsInvalid", "a\nb", domain.EINVALID},
		{"TabInsideIsInvalid", "a\tb", domain.EINVALID},
		{"DELIsInvalid", "a\x7f", domain.EINVALID},
		{"InvalidUTF8IsInvalid", "a\xffb", domain.EINVALID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newKey(t, time.Time{})
			_, err := k.DecideRevoke(domain.RevokeKey{Reason: tt.reason, By: byAlice}, t0.Add(time.Hour))
			wantCode(t, err, tt.code)
		})
	}

	t.Run("RevokedKeyIsKeyRevoked", func(t *testing.T) {
		k, _ := newKey(t, time.Time{})
		revoke(t, k, t0.Add(time.Minute))
		_, err := k.DecideRevoke(domain.RevokeKey{By: byAlice}, t0.Add(time.Hour))
		wantCode(t, err, domain.EKEYREVOKED)
	})

	t.Run("ExpiredKeyCanBeRevoked", func(t *testing.T) {
		k, _ := newKey(t, t0.Add(time.Hour))
		_, err := k.DecideRevoke(domain.RevokeKey{By: byAlice}, t0.Add(48*time.Hour))
		wantCode(t, err, "")
	})

	for _, tt := range []struct {
		name      string
		ifVersion func(v uint64) uint64
		code      string
	}{
		{"NoIfVersionIsValid", func(uint64) uint64 { return 0 }, ""},
		{"CurrentIfVersionIsValid", func(v uint64) uint64 { return v }, ""},
		{"OlderIfVersionIsPreconditionFailed", func(v uint64) uint64 { return v - 1 }, domain.EPRECONDITION},
		{"NewerIfVersionIsPreconditionFailed", func(v uint64) uint64 { return v + 1 }, domain.EPRECONDITION},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newKey(t, time.Time{})
			rotate(t, k, t0.Add(time.Minute), 0)
			_, err := k.DecideRevoke(domain.RevokeKey{IfVersion: tt.ifVersion(k.Version), By: byAlice}, t0.Add(time.Hour))
			wantCode(t, err, tt.code)
		})
	}
}

func TestGracePeriodSeconds(t *testing.T) {
	for _, tt := range []struct {
		seconds int64
		want    time.Duration
		code    string
	}{
		{0, 0, ""},
		{1, time.Second, ""},
		{604800, domain.MaxGracePeriod, ""},
		{604801, 0, domain.EINVALID},
		{-1, 0, domain.EINVALID},
		// Times 1e9 this wraps to about an hour: it must be judged as seconds.
		{-9223372036854771808, 0, domain.EINVALID},
		{math.MinInt64, 0, domain.EINVALID},
		{math.MaxInt64, 0, domain.EINVALID},
	} {
		got, err := domain.GracePeriodSeconds(tt.seconds)
		wantCode(t, err, tt.code)
		if got != tt.want {
			t.Errorf("GracePeriodSeconds(%d) = %v, want %v", tt.seconds, got, tt.want)
		}
	}
}
