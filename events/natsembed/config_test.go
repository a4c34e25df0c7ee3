package natsembed_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/events/natsembed"
)

// TestAuthorizationConfigGrantsWhatTheEmbeddedServerGrants reads the block
// with nats-server's own configuration parser: each user gets exactly the
// permissions the embedded server gives it, so both modes lock down alike.
func TestAuthorizationConfigGrantsWhatTheEmbeddedServerGrants(t *testing.T) {
	svc, _ := nkeys.CreateUser()
	sub, _ := nkeys.CreateUser()
	svcPub, _ := svc.PublicKey()
	subPub, _ := sub.PublicKey()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\n"+natsembed.AuthorizationConfig(svcPub, subPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server does not read the block: %v", err)
	}
	if got, want := len(opts.Nkeys), 2; got != want {
		t.Fatalf("%d nkey users, want %d", got, want)
	}
	want := map[string]*server.Permissions{svcPub: natsembed.ServicePermissions(), subPub: natsembed.SubscriberPermissions()}
	for _, u := range opts.Nkeys {
		if !reflect.DeepEqual(u.Permissions, want[u.Nkey]) {
			t.Errorf("user %s: permissions %+v %+v, want %+v %+v", u.Nkey, u.Permissions.Publish, u.Permissions.Subscribe, want[u.Nkey].Publish, want[u.Nkey].Subscribe)
		}
	}
	if len(opts.Users) != 0 || opts.Username != "" || opts.Authorization != "" || opts.NoAuthUser != "" {
		t.Errorf("the block lets in more than its two users: %+v", opts)
	}
}

// TestOperatorSetupGrantsWhatTheEmbeddedServerGrants decodes the .creds
// files' JWTs: the same permissions as the embedded server's users, signed
// by the account the configuration preloads, and that account has
// JetStream.
func TestOperatorSetupGrantsWhatTheEmbeddedServerGrants(t *testing.T) {
	s, err := natsembed.NewOperatorSetup()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:-1\n"+s.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server does not read the block: %v", err)
	}
	if len(opts.TrustedOperators) != 1 || opts.SystemAccount == "" {
		t.Fatalf("operator %d, system account %q", len(opts.TrustedOperators), opts.SystemAccount)
	}
	acc, _ := nkeys.FromSeed(s.AccountSeed)
	accPub, _ := acc.PublicKey()
	if _, ok := opts.AccountResolver.(*server.MemAccResolver); !ok {
		t.Fatalf("resolver %T, want MEMORY", opts.AccountResolver)
	}
	raw, err := conf.ParseFile(file)
	if err != nil {
		t.Fatal(err)
	}
	preload, _ := raw["resolver_preload"].(map[string]any)
	accJWT, ok := preload[accPub].(string)
	if !ok {
		t.Fatalf("the account of the users is not preloaded: %v", preload)
	}
	ac, err := jwt.DecodeAccountClaims(accJWT)
	if err != nil || !ac.Limits.JetStreamLimits.IsUnlimited() {
		t.Fatalf("account: %v, JetStream limits %+v", err, ac.Limits.JetStreamLimits)
	}
	for name, c := range map[string]struct {
		creds []byte
		want  *server.Permissions
	}{"service": {s.ServiceCreds, natsembed.ServicePermissions()}, "subscriber": {s.SubscriberCreds, natsembed.SubscriberPermissions()}} {
		token, err := jwt.ParseDecoratedJWT(c.creds)
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if uc.Issuer != accPub {
			t.Errorf("%s: issued by %s, not the account %s", name, uc.Issuer, accPub)
		}
		same := func(got jwt.StringList, want []string) bool {
			g, w := slices.Clone([]string(got)), slices.Clone(want)
			slices.Sort(g)
			slices.Sort(w)
			return slices.Equal(g, w)
		}
		if !same(uc.Pub.Allow, c.want.Publish.Allow) || !same(uc.Pub.Deny, c.want.Publish.Deny) ||
			!same(uc.Sub.Allow, c.want.Subscribe.Allow) || !same(uc.Sub.Deny, c.want.Subscribe.Deny) {
			t.Errorf("%s: permissions %+v, want %+v %+v", name, uc.Permissions, c.want.Publish, c.want.Subscribe)
		}
	}
}
