package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
)

const natsCredsUsage = `Usage: keyledger nats-credentials --out DIR [--format nkeys|creds] [--routes HOST:PORT,...] [--force]

Writes, for your own NATS server or cluster, keyledger's service credential,
the read-only credential of verifiers and auditors, and nats-auth.conf: the
server configuration that grants them what the embedded server grants its
two users, and lets no other client in. Include it in every server's
configuration (include "nats-auth.conf") and restart them. It is printed on
stdout too.

  nkeys   NKey seeds (keyledger-service.nk, keyledger-subscriber.nk) and an
          accounts { } block
  creds   .creds files (keyledger-service.creds, keyledger-subscriber.creds)
          signed by a new operator and accounts, whose seeds (operator.nk,
          account.nk, account-read.nk) are written too: keep those offline;
          the block holds the operator, the accounts and resolver: MEMORY

Either way the service's user is in the account KEYLEDGER, which holds the
stream, and the read-only user in KEYLEDGER_READ, which imports what it reads
and reaches it as the JetStream domain keyledger (the verifier package and
keyledger audit find it; the nats CLI: --js-domain keyledger), so that no
answer it asks for can land in the stream.

With --routes, nats-routes.conf too: a route user and password for a cluster,
and the routes to every listed server presenting them. Include it inside
every server's cluster { } block (deploy/nats-1.conf does).

Every file is mode 0600; none is overwritten without --force.
`

// natsCredentials is `keyledger nats-credentials`.
func natsCredentials(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nats-credentials", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, natsCredsUsage); fs.PrintDefaults() }
	out := fs.String("out", "", "directory to write the credentials and nats-auth.conf to (created mode 0700 if missing)")
	format := fs.String("format", "nkeys", "nkeys (NKey seeds, an accounts block) or creds (.creds files, an operator and resolver: MEMORY)")
	routes := fs.String("routes", "", "the cluster's route addresses, HOST:PORT,...: also write nats-routes.conf, a route user and password and the routes presenting them, for every server's cluster block")
	force := fs.Bool("force", false, "overwrite files that exist")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("nats-credentials needs --out DIR, where to write the credentials")
	}
	files, err := credentialFiles(*format)
	if err != nil {
		return err
	}
	if *routes != "" {
		conf, err := routesConfig(*routes)
		if err != nil {
			return err
		}
		files.order = append(files.order, routesFile)
		files.contents[routesFile], files.about[routesFile] = conf, "the cluster's route user and routes, for every server's cluster block"
	}
	if !*force {
		var exist []string
		for _, name := range files.order {
			if _, err := os.Lstat(filepath.Join(*out, name)); err == nil {
				exist = append(exist, filepath.Join(*out, name))
			}
		}
		if len(exist) > 0 {
			verb := "exists"
			if len(exist) > 1 {
				verb = "exist"
			}
			return fmt.Errorf("%s %s: nats-credentials overwrites nothing without --force (servers and services using the old credentials would be locked out)", strings.Join(exist, ", "), verb)
		}
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	for _, name := range files.order {
		if err := writePrivate(filepath.Join(*out, name), files.contents[name], *force); err != nil {
			return err
		}
	}
	for _, name := range files.order {
		fmt.Fprintf(stderr, "wrote %s: %s\n", filepath.Join(*out, name), files.about[name])
	}
	fmt.Fprintf(stderr, "the service: keyledger serve --nats-url … --nats-creds %s\n", filepath.Join(*out, files.service))
	fmt.Fprintf(stderr, "verifiers and auditors: --nats-creds %s, inbox prefix %s, JetStream domain %s\n", filepath.Join(*out, files.subscriber), events.SubscriberInbox, events.SubscriberDomain)
	_, err = io.WriteString(stdout, string(files.contents[confFile]))
	return err
}

const (
	confFile   = "nats-auth.conf"
	routesFile = "nats-routes.conf"
)

// routesConfig is nats-routes.conf for the given route addresses. A
// server presents only the credentials written in a route's URL (never
// its own cluster authorization), so each route carries them.
func routesConfig(list string) ([]byte, error) {
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	password := hex.EncodeToString(secret)
	var b strings.Builder
	b.WriteString("# The cluster's route credential (keyledger nats-credentials --routes).\n")
	b.WriteString("# Include it inside every server's cluster { } block: the servers accept\n")
	b.WriteString("# routes presenting it, and present it on theirs.\n")
	fmt.Fprintf(&b, "authorization {\n  user: route\n  password: %q\n}\nroutes: [\n", password)
	for _, addr := range strings.Split(list, ",") {
		addr = strings.TrimSpace(addr)
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" || strings.ContainsAny(addr, "/@\" ") {
			return nil, fmt.Errorf("--routes: %q is not HOST:PORT (a list: nats-1:6222,nats-2:6222,nats-3:6222)", addr)
		}
		fmt.Fprintf(&b, "  %q\n", "nats-route://route:"+password+"@"+addr)
	}
	b.WriteString("]\n")
	return []byte(b.String()), nil
}

// credentialSet is what one format writes, by file name.
type credentialSet struct {
	order               []string
	contents            map[string][]byte
	about               map[string]string
	service, subscriber string
}

func credentialFiles(format string) (*credentialSet, error) {
	s := &credentialSet{contents: map[string][]byte{}, about: map[string]string{}}
	add := func(name string, raw []byte, about string) {
		s.order = append(s.order, name)
		s.contents[name], s.about[name] = raw, about
	}
	switch format {
	case "nkeys":
		svc, svcSeed, err := newUserSeed()
		if err != nil {
			return nil, err
		}
		sub, subSeed, err := newUserSeed()
		if err != nil {
			return nil, err
		}
		s.service, s.subscriber = "keyledger-service.nk", "keyledger-subscriber.nk"
		add(s.service, svcSeed, "the service's NKey seed")
		add(s.subscriber, subSeed, "the read-only NKey seed")
		add(confFile, []byte(natsembed.AccountsConfig(svc, sub)), "the nats-server accounts block")
	case "creds":
		op, err := natsembed.NewOperatorSetup()
		if err != nil {
			return nil, err
		}
		s.service, s.subscriber = "keyledger-service.creds", "keyledger-subscriber.creds"
		add(s.service, op.ServiceCreds, "the service's .creds")
		add(s.subscriber, op.SubscriberCreds, "the read-only .creds")
		add("operator.nk", append(op.OperatorSeed, '\n'), "the operator's seed: keep it offline")
		add("account.nk", append(op.AccountSeed, '\n'), "the account KEYLEDGER's seed, which signs new service users: keep it offline")
		add("account-read.nk", append(op.ReadAccountSeed, '\n'), "the account KEYLEDGER_READ's seed, which signs new read-only users: keep it offline")
		add(confFile, []byte(op.Config), "the nats-server operator, accounts and resolver: MEMORY")
	default:
		return nil, fmt.Errorf("--format must be nkeys or creds, not %q", format)
	}
	return s, nil
}

func newUserSeed() (pub string, seed []byte, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", nil, err
	}
	if pub, err = kp.PublicKey(); err != nil {
		return "", nil, err
	}
	seed, err = kp.Seed()
	return pub, append(seed, '\n'), err
}

// writePrivate writes path with mode 0600, whole or not at all (no
// reader ever sees half a credential): a new file only, unless force.
func writePrivate(path string, raw []byte, force bool) error {
	err := writeWhole(path, raw, 0o600, force)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: nats-credentials overwrites nothing without --force", path)
	}
	return err
}
