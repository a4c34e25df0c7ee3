package natsembed

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/events"
)

// AccountsConfig is the nats-server configuration block that grants the
// service user and the read-only subscriber, by their NKey public keys,
// exactly what the embedded server grants them (ServicePermissions,
// SubscriberPermissions), each in its account as the embedded server has
// them: the service in ServiceAccount, which holds the stream, and the
// subscriber in ReadAccount, which imports what it reads. An operator's
// own cluster then locks keyledger down as the embedded mode does. Every
// other client is refused, the anonymous one included.
func AccountsConfig(servicePub, subscriberPub string) string {
	var b strings.Builder
	b.WriteString("# keyledger's NATS accounts and users (keyledger nats-credentials). The account\n")
	fmt.Fprintf(&b, "# %s holds the stream and the buckets; its user, the service, may not\n", ServiceAccount)
	fmt.Fprintf(&b, "# delete, purge or change the stream %s nor delete a message of it. The\n", events.StreamName)
	fmt.Fprintf(&b, "# account %s holds the read-only user of verifiers and auditors: it\n", ReadAccount)
	b.WriteString("# imports what they read, so that no answer they ask for lands in the stream.\n")
	b.WriteString("# No other client gets in.\n")
	b.WriteString("accounts {\n")
	fmt.Fprintf(&b, "  %s: {\n    jetstream: enabled\n    users: [\n", ServiceAccount)
	fmt.Fprintf(&b, "      # the service (keyledger serve --nats-creds <service seed>)\n      { nkey: %s\n        permissions: %s }\n    ]\n", servicePub, permissionsConfig(ServicePermissions(), "        "))
	fmt.Fprintf(&b, "    # what %s imports, and no other account\n    exports: [\n", ReadAccount)
	for _, s := range readServices() {
		rt := ""
		if s.streamed {
			rt = fmt.Sprintf(", response_type: stream, response_threshold: %q", readResponseThreshold.String())
		}
		fmt.Fprintf(&b, "      { service: %q%s, accounts: [%s] }\n", s.export, rt, ReadAccount)
	}
	fmt.Fprintf(&b, "      { stream: %q, accounts: [%s] }\n    ]\n  }\n", readStream, ReadAccount)
	fmt.Fprintf(&b, "  %s: {\n    users: [\n", ReadAccount)
	fmt.Fprintf(&b, "      # read-only: verifiers and auditors (JetStream domain %s, inbox prefix %s)\n      { nkey: %s\n        permissions: %s }\n    ]\n",
		events.SubscriberDomain, events.SubscriberInbox, subscriberPub, permissionsConfig(SubscriberPermissions(), "        "))
	b.WriteString("    imports: [\n")
	for _, s := range readServices() {
		fmt.Fprintf(&b, "      { service: { account: %s, subject: %q }, to: %q }\n", ServiceAccount, s.export, s.local)
	}
	fmt.Fprintf(&b, "      { stream: { account: %s, subject: %q } }\n    ]\n  }\n}\n", ServiceAccount, readStream)
	return b.String()
}

// permissionsConfig writes p in nats-server's configuration syntax, each
// subject quoted ("$JS.API…" unquoted would be read as a variable).
func permissionsConfig(p *server.Permissions, indent string) string {
	list := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	side := func(name string, sp *server.SubjectPermission) string {
		if sp == nil {
			return ""
		}
		s := indent + "  " + name + ": { allow: " + list(sp.Allow)
		if len(sp.Deny) > 0 {
			s += ", deny: " + list(sp.Deny)
		}
		return s + " }\n"
	}
	return "{\n" + side("publish", p.Publish) + side("subscribe", p.Subscribe) + indent + "}"
}

// OperatorSetup is a self-contained NATS decentralised-auth setup for
// keyledger: an operator, a system account, the account ServiceAccount
// (with JetStream, exporting what ReadAccount imports, to it alone), the
// account ReadAccount, and the two users as JWTs with the same permissions
// as AccountsConfig's, each in a .creds file. Config holds the operator,
// the accounts and resolver: MEMORY, ready to include in every server of
// the cluster.
type OperatorSetup struct {
	Config          string
	ServiceCreds    []byte
	SubscriberCreds []byte
	// OperatorSeed, AccountSeed (ServiceAccount's) and ReadAccountSeed
	// sign new accounts and users: nothing keyledger runs with. Keep them
	// offline.
	OperatorSeed, AccountSeed, ReadAccountSeed []byte
}

// NewOperatorSetup makes new keys for an operator, its accounts and the
// two users, and signs their JWTs.
func NewOperatorSetup() (*OperatorSetup, error) {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	opPub, _ := op.PublicKey()
	sys, sysJWT, err := newAccount(op, "SYS", nil)
	if err != nil {
		return nil, err
	}
	read, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	readPub, _ := read.PublicKey()
	acc, accJWT, err := newAccount(op, ServiceAccount, func(ac *jwt.AccountClaims) {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
			Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
		for _, s := range readServices() {
			e := &jwt.Export{Subject: jwt.Subject(s.export), Type: jwt.Service, TokenReq: true}
			if s.streamed {
				e.ResponseType, e.ResponseThreshold = jwt.ResponseTypeStream, readResponseThreshold
			}
			ac.Exports.Add(e)
		}
		ac.Exports.Add(&jwt.Export{Subject: jwt.Subject(readStream), Type: jwt.Stream, TokenReq: true})
	})
	if err != nil {
		return nil, err
	}
	accPub, _ := acc.PublicKey()
	// The exports need a token: ReadAccount's imports carry one each,
	// signed by ServiceAccount for ReadAccount alone.
	activation := func(subject string, kind jwt.ExportType) (string, error) {
		a := jwt.NewActivationClaims(readPub)
		a.ImportSubject, a.ImportType = jwt.Subject(subject), kind
		return a.Encode(acc)
	}
	var imports jwt.Imports
	for _, s := range readServices() {
		token, err := activation(s.export, jwt.Service)
		if err != nil {
			return nil, err
		}
		imports.Add(&jwt.Import{Account: accPub, Subject: jwt.Subject(s.export), LocalSubject: jwt.RenamingSubject(s.local), Type: jwt.Service, Token: token})
	}
	token, err := activation(readStream, jwt.Stream)
	if err != nil {
		return nil, err
	}
	imports.Add(&jwt.Import{Account: accPub, Subject: jwt.Subject(readStream), Type: jwt.Stream, Token: token})
	rc := jwt.NewAccountClaims(readPub)
	rc.Name, rc.Imports = ReadAccount, imports
	readJWT, err := rc.Encode(op)
	if err != nil {
		return nil, err
	}
	sysPub, _ := sys.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "keyledger"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	if err != nil {
		return nil, err
	}
	s := &OperatorSetup{}
	if s.ServiceCreds, err = newUserCreds(acc, "keyledger-service", ServicePermissions()); err != nil {
		return nil, err
	}
	if s.SubscriberCreds, err = newUserCreds(read, "keyledger-subscriber", SubscriberPermissions()); err != nil {
		return nil, err
	}
	if s.OperatorSeed, err = op.Seed(); err != nil {
		return nil, err
	}
	if s.AccountSeed, err = acc.Seed(); err != nil {
		return nil, err
	}
	if s.ReadAccountSeed, err = read.Seed(); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("# keyledger's NATS operator, accounts and users (keyledger nats-credentials\n")
	fmt.Fprintf(&b, "# --format creds). The account %s holds the stream; its user is the service.\n", ServiceAccount)
	fmt.Fprintf(&b, "# The account %s holds the read-only user of verifiers and auditors, and\n", ReadAccount)
	fmt.Fprintf(&b, "# imports what they read (JetStream domain %s). Include it in every server\n", events.SubscriberDomain)
	b.WriteString("# of the cluster. No other client gets in.\n")
	fmt.Fprintf(&b, "operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n  %s: %q\n}\n",
		opJWT, sysPub, sysPub, sysJWT, accPub, accJWT, readPub, readJWT)
	s.Config = b.String()
	return s, nil
}

func newAccount(op nkeys.KeyPair, name string, with func(*jwt.AccountClaims)) (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, "", err
	}
	pub, _ := kp.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	if with != nil {
		with(ac)
	}
	token, err := ac.Encode(op)
	return kp, token, err
}

func newUserCreds(acc nkeys.KeyPair, name string, p *server.Permissions) ([]byte, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Pub.Allow.Add(p.Publish.Allow...)
	uc.Pub.Deny.Add(p.Publish.Deny...)
	uc.Sub.Allow.Add(p.Subscribe.Allow...)
	uc.Sub.Deny.Add(p.Subscribe.Deny...)
	token, err := uc.Encode(acc)
	if err != nil {
		return nil, err
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}
