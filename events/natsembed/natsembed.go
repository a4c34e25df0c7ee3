// Package natsembed runs keyledger's in-process nats-server: JetStream on a
// local directory for zero set-up runs and tests, optionally with a client
// port guarded by generated NKey credentials (a service user that may not
// take history away, and a read-only subscriber).
//
// Outside tests that run servers of their own, it is the only package of
// keyledger that imports nats-server, so that a service building in the
// verifier (or events) takes on nats.go and none of the server.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/events"
)

// Config configures the in-process nats-server of zero set-up runs.
type Config struct {
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

// Server is a running in-process nats-server and a connection to it.
type Server struct {
	Server *server.Server
	Conn   *nats.Conn
	// Credentials are the seed files of the users allowed on the client
	// port; zero when no port is open.
	Credentials Credentials
}

// Start starts a JetStream-enabled nats-server in this process and
// connects to it without a network port.
func Start(cfg Config) (*Server, error) {
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
		global, read, err := readAccounts()
		if err != nil {
			return nil, err
		}
		opts.Accounts = []*server.Account{global, read}
		if opts.Nkeys, err = creds.users(global, read); err != nil {
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
	if len(opts.Accounts) > 0 {
		// With accounts of its own configured, the server enables
		// JetStream only for those the configuration says; the global
		// account (the service's, where KEYLEDGER is) is enabled here,
		// with no limits, as it is when it is the only account.
		if err := ns.GlobalAccount().EnableJetStream(nil, nil); err != nil {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats-server: JetStream for the service's account: %w", err)
		}
	}
	nc, err := nats.Connect("", append(connOpts, nats.InProcessServer(ns))...)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("connect to the embedded nats-server: %w", err)
	}
	return &Server{Server: ns, Conn: nc, Credentials: creds}, nil
}

// Close drains the connection, then stops the server and waits for it.
func (e *Server) Close() {
	_ = events.DrainConn(e.Conn, 10*time.Second)
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
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
func (e *Server) ClientURL() string {
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
