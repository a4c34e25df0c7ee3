package events

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
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
	Fsync bool
	// Listen opens a client port ("host:port", port 0 for any free one) for
	// other processes. It then requires credentials: see Credentials.
	Listen string
	// CredentialsDir holds the generated NKey seeds (Dir when empty).
	CredentialsDir string
	Logger         *slog.Logger
}

// Embedded is a running in-process nats-server and a connection to it.
type Embedded struct {
	Server *server.Server
	Conn   *nats.Conn
	// Credentials are the seed files of the users allowed on the client
	// port; zero when no port is open.
	Credentials Credentials
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
		// Without Listen there is no client port: the service talks to it
		// in-process, and nothing else can reach the stream.
		DontListen: cfg.Listen == "",
	}
	var creds Credentials
	connOpts := []nats.Option{nats.Name("keyledger")}
	if cfg.Listen != "" {
		host, port, err := listenAddr(cfg.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
		dir := cfg.CredentialsDir
		if dir == "" {
			dir = cfg.Dir
		}
		if creds, err = LoadOrCreateCredentials(dir); err != nil {
			return nil, err
		}
		if opts.Nkeys, err = creds.users(); err != nil {
			return nil, err
		}
		nk, err := nats.NkeyOptionFromSeed(creds.Service)
		if err != nil {
			return nil, err
		}
		connOpts = append(connOpts, nk)
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
	nc, err := nats.Connect("", append(connOpts, nats.InProcessServer(ns))...)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("connect to the embedded nats-server: %w", err)
	}
	return &Embedded{Server: ns, Conn: nc, Credentials: creds}, nil
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

// listenAddr splits host:port; port 0 asks for any free port.
func listenAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("NATS listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("NATS listen address %q: bad port", addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// ClientURL is where other processes reach the embedded server, or "" when
// it has no client port.
func (e *Embedded) ClientURL() string {
	if e.Server.Addr() == nil {
		return ""
	}
	return e.Server.ClientURL()
}

// natsLogger sends the embedded server's log to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warn(fmt.Sprintf(f, v...)) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Debugf(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n natsLogger) Tracef(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
