package natsembed

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/events"
)

// AuthorizationConfig is the nats-server configuration block that grants
// the service user and the read-only subscriber, by their NKey public
// keys, exactly what the embedded server grants them
// (ServicePermissions, SubscriberPermissions): an operator's own cluster
// then locks keyledger down as the embedded mode does. Every other client
// is refused, the anonymous one included.
func AuthorizationConfig(servicePub, subscriberPub string) string {
	var b strings.Builder
	b.WriteString("# keyledger's NATS users (keyledger nats-credentials): the service, which may\n")
	b.WriteString("# not delete, purge or change the stream KEYLEDGER nor delete a message of it,\n")
	b.WriteString("# and a read-only user for verifiers and auditors. No other client gets in.\n")
	b.WriteString("authorization {\n  users: [\n")
	fmt.Fprintf(&b, "    # the service (keyledger serve --nats-creds <service seed>)\n    { nkey: %s\n      permissions: %s }\n", servicePub, permissionsConfig(ServicePermissions(), "      "))
	fmt.Fprintf(&b, "    # read-only: verifiers and auditors (inbox prefix %s)\n    { nkey: %s\n      permissions: %s }\n", events.SubscriberInbox, subscriberPub, permissionsConfig(SubscriberPermissions(), "      "))
	b.WriteString("  ]\n}\n")
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
// keyledger: an operator, a system account, the account KEYLEDGER (with
// JetStream), and the two users as JWTs with the same permissions as
// AuthorizationConfig's, each in a .creds file. Config holds the
// operator, the accounts and resolver: MEMORY, ready to include in every
// server of the cluster.
type OperatorSetup struct {
	Config          string
	ServiceCreds    []byte
	SubscriberCreds []byte
	// OperatorSeed and AccountSeed sign new accounts and users: nothing
	// keyledger runs with. Keep them offline.
	OperatorSeed, AccountSeed []byte
}

// NewOperatorSetup makes new keys for an operator, its accounts and the
// two users, and signs their JWTs.
func NewOperatorSetup() (*OperatorSetup, error) {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	opPub, _ := op.PublicKey()
	sys, sysJWT, err := newAccount(op, "SYS", false)
	if err != nil {
		return nil, err
	}
	acc, accJWT, err := newAccount(op, "KEYLEDGER", true)
	if err != nil {
		return nil, err
	}
	sysPub, _ := sys.PublicKey()
	accPub, _ := acc.PublicKey()
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
	if s.SubscriberCreds, err = newUserCreds(acc, "keyledger-subscriber", SubscriberPermissions()); err != nil {
		return nil, err
	}
	if s.OperatorSeed, err = op.Seed(); err != nil {
		return nil, err
	}
	if s.AccountSeed, err = acc.Seed(); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("# keyledger's NATS operator, accounts and users (keyledger nats-credentials\n")
	b.WriteString("# --format creds). The account KEYLEDGER holds the stream; its users are the\n")
	b.WriteString("# service and a read-only user for verifiers and auditors (.creds files).\n")
	b.WriteString("# Include it in every server of the cluster. No other client gets in.\n")
	fmt.Fprintf(&b, "operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opJWT, sysPub, sysPub, sysJWT, accPub, accJWT)
	s.Config = b.String()
	return s, nil
}

func newAccount(op nkeys.KeyPair, name string, jetStream bool) (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, "", err
	}
	pub, _ := kp.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	if jetStream {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
			Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
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
