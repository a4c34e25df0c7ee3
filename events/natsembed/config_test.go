package natsembed_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAccountsConfigGrantsWhatTheEmbeddedServerGrants reads the block
// with nats-server's own configuration parser: each user gets exactly the
// permissions the embedded server gives it, in the account the embedded
// server has it in, so both modes lock down alike. A server run from it
// serves the service, lets a read-only client read the stream, and keeps
// every answer that client asks for in its own account.
func TestAccountsConfigGrantsWhatTheEmbeddedServerGrants(t *testing.T) {
	svc, _ := nkeys.CreateUser()
	sub, _ := nkeys.CreateUser()
	svcPub, _ := svc.PublicKey()
	subPub, _ := sub.PublicKey()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\n"+natsembed.AccountsConfig(svcPub, subPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server does not read the block: %v", err)
	}
	if got, want := len(opts.Nkeys), 2; got != want {
		t.Fatalf("%d nkey users, want %d", got, want)
	}
	want := map[string]struct {
		account string
		perms   *server.Permissions
	}{svcPub: {natsembed.ServiceAccount, natsembed.ServicePermissions()}, subPub: {natsembed.ReadAccount, natsembed.SubscriberPermissions()}}
	for _, u := range opts.Nkeys {
		w := want[u.Nkey]
		if !reflect.DeepEqual(u.Permissions, w.perms) {
			t.Errorf("user %s: permissions %+v %+v, want %+v %+v", u.Nkey, u.Permissions.Publish, u.Permissions.Subscribe, w.perms.Publish, w.perms.Subscribe)
		}
		if u.Account == nil || u.Account.Name != w.account {
			t.Errorf("user %s: account %v, want %s", u.Nkey, u.Account, w.account)
		}
	}
	if len(opts.Users) != 0 || opts.Username != "" || opts.Authorization != "" || opts.NoAuthUser != "" {
		t.Errorf("the block lets in more than its two users: %+v", opts)
	}

	opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = true, t.TempDir(), true, true
	ns := runServer(t, opts)
	seed := func(kp nkeys.KeyPair) nats.Option {
		pub, _ := kp.PublicKey()
		return nats.Nkey(pub, kp.Sign)
	}
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	svcConn, err := nats.Connect(ns.ClientURL(), seed(svc), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer svcConn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(svcConn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatalf("the service cannot open the store: %v", err)
	}
	k, err := (&domain.Keys{Store: store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := nats.Connect(ns.ClientURL(), seed(sub), quiet, nats.CustomInboxPrefix(events.SubscriberInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer subConn.Close()
	subJS, _ := jetstream.New(subConn)
	reader, err := events.Attach(ctx, subJS, events.Config{Logger: natstest.Quiet(), Signers: store.Signers(), ReadOnly: true})
	if err != nil {
		t.Fatalf("the read-only user cannot attach: %v", err)
	}
	if got, err := reader.Load(ctx, "acme", k.Key.ID); err != nil || len(got) != 1 {
		t.Fatalf("the read-only user reads %+v, %v", got, err)
	}
	natstest.SubscriberAnswersStayInItsAccount(t, ctx, svcJS, subConn, events.Subject("acme", k.Key.ID, domain.TypeKeyRevoked))
}

// TestOperatorSetupGrantsWhatTheEmbeddedServerGrants decodes the .creds
// files' JWTs: the same permissions as the embedded server's users, each
// signed by its account (the service's has JetStream; the read-only one
// has none, and imports, with a token the service's account signed for
// it, what that exports to nobody else).
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
	for _, e := range ac.Exports {
		if !e.TokenReq {
			t.Errorf("%s exports %s to any account: it must need a token", natsembed.ServiceAccount, e.Subject)
		}
	}
	read, _ := nkeys.FromSeed(s.ReadAccountSeed)
	readPub, _ := read.PublicKey()
	readJWT, ok := preload[readPub].(string)
	if !ok {
		t.Fatalf("the account %s is not preloaded", natsembed.ReadAccount)
	}
	rc, err := jwt.DecodeAccountClaims(readJWT)
	if err != nil || rc.Limits.IsJSEnabled() {
		t.Fatalf("%s: %v, JetStream limits %+v (it must have no JetStream)", natsembed.ReadAccount, err, rc.Limits.JetStreamLimits)
	}
	if len(rc.Imports) != len(ac.Exports) {
		t.Errorf("%s imports %d subjects, %s exports %d", natsembed.ReadAccount, len(rc.Imports), natsembed.ServiceAccount, len(ac.Exports))
	}
	for _, i := range rc.Imports {
		act, err := jwt.DecodeActivationClaims(i.Token)
		if err != nil || act.Issuer != accPub || act.Subject != readPub {
			t.Errorf("import %s: activation %+v, %v", i.Subject, act, err)
		}
	}
	for name, c := range map[string]struct {
		creds  []byte
		want   *server.Permissions
		issuer string
	}{"service": {s.ServiceCreds, natsembed.ServicePermissions(), accPub}, "subscriber": {s.SubscriberCreds, natsembed.SubscriberPermissions(), readPub}} {
		token, err := jwt.ParseDecoratedJWT(c.creds)
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if uc.Issuer != c.issuer {
			t.Errorf("%s: issued by %s, not the account %s", name, uc.Issuer, c.issuer)
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
