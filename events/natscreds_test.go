package events

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestCredentialsOptionTellsSeedFromCredsByContent gives each kind of file
// under a name that says nothing (no .nk, no .creds): the content decides.
func TestCredentialsOptionTellsSeedFromCredsByContent(t *testing.T) {
	dir := t.TempDir()
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	pub, _ := user.PublicKey()
	claims := jwt.NewUserClaims(pub)
	token, err := claims.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, raw []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, c := range []struct {
		name, file string
		raw        []byte
		wantErr    string // "" : accepted
	}{
		{"SeedWithoutSuffix", "service-credential", append(seed, '\n'), ""},
		{"CredsWithoutSuffix", "service-credential.txt", creds, ""},
		{"CredsNamedNk", "looks-like-a-seed.nk", creds, ""},
		{"PEMIsNeither", "key.pem", []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQ==\n-----END PRIVATE KEY-----\n"), "neither an NKey user seed"},
		{"EmptyIsNeither", "empty.nk", nil, "neither an NKey user seed"},
		{"AccountSeedIsNotAUsers", "account.nk", accountSeed, "not of a user"},
		{"BrokenSeed", "broken.nk", []byte("SUAAAAAAAAAA\n"), "not a valid one"},
		{"JWTWithoutSeed", "half.creds", []byte(strings.SplitAfter(string(creds), "------END NATS USER JWT------")[0]), "no usable user seed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(c.file, c.raw)
			opt, err := CredentialsOption(path)
			if c.wantErr == "" {
				if err != nil || opt == nil {
					t.Fatalf("CredentialsOption(%s) = %v, want an option", c.file, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CredentialsOption(%s) accepted it", c.file)
			}
			if msg := err.Error(); !strings.Contains(msg, c.wantErr) || !strings.Contains(msg, path) {
				t.Fatalf("error %q, want it to name %s and say %q", msg, path, c.wantErr)
			}
			if strings.Contains(err.Error(), string(accountSeed)) {
				t.Fatal("the error quotes the seed")
			}
		})
	}
	if _, err := CredentialsOption(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
