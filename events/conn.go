package events

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// SubscriberInbox is the inbox prefix of clients using the subscriber
// credential: the one where it may receive replies (nats.go:
// nats.CustomInboxPrefix(SubscriberInbox); the nats CLI: --inbox-prefix).
// Replies to every other client go to _INBOX.>, which it may not read.
const SubscriberInbox = "_INBOX_keyledger_subscriber"

// SubscriberDomain is the JetStream domain under which the subscriber
// credential of keyledger's servers (the embedded one, and those set up
// with keyledger nats-credentials) reaches the stream: it is in an account
// of its own that imports what it reads, so that no answer it asks for can
// land in the service's account. nats.go: jetstream.NewWithDomain(nc,
// SubscriberDomain), though Attach (and so the verifier) finds it from a
// jetstream.New too; the nats CLI: --js-domain keyledger.
const SubscriberDomain = "keyledger"

// Connect dials an existing NATS server or cluster (comma-separated URLs),
// reconnecting for ever.
func Connect(urls string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name("keyledger"), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(urls), err)
	}
	return nc, nil
}

// redactURLs hides the password or token in each of the comma-separated
// urls: the error is logged, once per try while a start-up waits.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		if u.User != nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.User("xxxxx") // nats://token@host
			}
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

// DrainConn drains nc and waits, at most timeout, until it is closed.
func DrainConn(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return errors.New("NATS drain timed out")
	}
}
