package natsembed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/events"
)

// Credentials are the NKey seed files of the embedded server's two users:
// the service itself, and a read-only subscriber for services and auditors
// that may read the stream and make consumers on it, but never publish an
// event nor change, purge or delete the stream.
type Credentials struct {
	Service    string
	Subscriber string
}

// LoadOrCreateCredentials returns the seed files in dir, creating any that
// is missing with mode 0600.
func LoadOrCreateCredentials(dir string) (Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Credentials{}, err
	}
	c := Credentials{
		Service:    filepath.Join(dir, "nats-service.nk"),
		Subscriber: filepath.Join(dir, "nats-subscriber.nk"),
	}
	for _, path := range []string{c.Service, c.Subscriber} {
		if err := ensureSeed(path); err != nil {
			return Credentials{}, err
		}
	}
	return c, nil
}

func ensureSeed(path string) error {
	if fi, err := os.Stat(path); err == nil {
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s is readable by others (mode %v); make it 0600", path, fi.Mode().Perm())
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return err
	}
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func publicKey(seedFile string) (string, error) {
	raw, err := os.ReadFile(seedFile)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		return "", fmt.Errorf("%s: %w", seedFile, err)
	}
	return kp.PublicKey()
}

// ServicePermissions are the service user's: everything but what would
// let its holder take history away — delete, purge or change KEYLEDGER,
// or delete a message of it. keyledger itself never does any of these (it
// creates the stream when missing, and never changes it), so that whoever
// copies the service credential cannot delete the stream and write back a
// shorter history.
func ServicePermissions() *server.Permissions {
	api := "$JS.API."
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{
			api + "STREAM.DELETE." + events.StreamName, api + "STREAM.PURGE." + events.StreamName,
			api + "STREAM.UPDATE." + events.StreamName, api + "STREAM.MSG.DELETE." + events.StreamName,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
}

// SubscriberPermissions are what a verifier, or an auditor, needs to read
// KEYLEDGER and the newest snapshot (the bucket KEYLEDGER_SNAPSHOTS, which
// a verifier starts from), and nothing else: the requests ReadAccount
// imports (readServices: stream info, direct gets, message gets; no
// consumer), a plain subscription to the events, and replies on its own
// inbox. Everything not allowed is denied: no publish to
// keyledger.events.> (another read-only user's subscription would see
// it), no stream create, update, purge or delete, no consumer, no message
// delete, and no other client's replies.
func SubscriberPermissions() *server.Permissions {
	// $JS.API.STREAM.INFO.KEYLEDGER is not imported: the server answers
	// it with "JetStream not enabled for account", in ReadAccount, which
	// tells a client made with jetstream.New to use SubscriberDomain
	// (events.Attach does).
	allow := []string{"$JS.API.STREAM.INFO." + events.StreamName}
	for _, s := range readServices() {
		allow = append(allow, s.local)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow},
		Subscribe: &server.SubjectPermission{Allow: []string{readStream, events.SubscriberInbox + ".>"}},
	}
}

// users are the embedded server's two users: the service in the global
// account, the subscriber in ReadAccount.
func (c Credentials) users(global, read *server.Account) ([]*server.NkeyUser, error) {
	svc, err := publicKey(c.Service)
	if err != nil {
		return nil, err
	}
	sub, err := publicKey(c.Subscriber)
	if err != nil {
		return nil, err
	}
	return []*server.NkeyUser{
		{Nkey: svc, Permissions: ServicePermissions(), Account: global},
		{Nkey: sub, Permissions: SubscriberPermissions(), Account: read},
	}, nil
}
