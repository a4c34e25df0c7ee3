package events

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process nats-server of zero set-up runs.
type EmbeddedConfig struct {
	// Dir holds the JetStream file store (in its "jetstream" folder).
	Dir string
	// Fsync makes every write reach the disk before it is acknowledged, so
	// that an acknowledged revocation survives a power loss. Off, the
	// server syncs on its own interval (2 minutes by default).
	Fsync  bool
	Logger *slog.Logger
}

// Embedded is a running in-process nats-server and a connection to it.
type Embedded struct {
	Server *server.Server
	Conn   *nats.Conn
}

// StartEmbedded starts a JetStream-enabled nats-server in this process and
// connects to it without a network port.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := &server.Options{
		ServerName: "keyledger-embedded",
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.Fsync,
		NoSigs:     true,
		// No client port: the service talks to it in-process, and nothing
		// else can reach the stream.
		DontListen: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{cfg.Logger.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats-server did not become ready within 30s")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("keyledger"))
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("connect to the embedded nats-server: %w", err)
	}
	return &Embedded{Server: ns, Conn: nc}, nil
}

// Close drains the connection, then stops the server and waits for it.
func (e *Embedded) Close() {
	_ = DrainConn(e.Conn, 10*time.Second)
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// Connect dials an existing NATS server or cluster (comma-separated URLs),
// reconnecting for ever.
func Connect(urls string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name("keyledger"), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", urls, err)
	}
	return nc, nil
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

// natsLogger sends the embedded server's log to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warn(fmt.Sprintf(f, v...)) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Debugf(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n natsLogger) Tracef(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
