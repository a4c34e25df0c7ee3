package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
)

// common are the flags every command that touches the store shares.
type common struct {
	replicas    int
	dataDir     string
	natsURL     string
	natsCreds   string
	natsTLSCA   string
	natsTLSCert string
	natsTLSKey  string
	natsInbox   string
	fsync       bool
	keyPrefix   string
	logFormat   string
	logLevel    string
	config      string
	signing
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory of the embedded NATS server's JetStream store")
	fs.StringVar(&c.natsURL, "nats-url", "", "use this NATS server or cluster (comma-separated URLs) instead of the embedded one")
	fs.StringVar(&c.natsCreds, "nats-creds", "", "with --nats-url: a NATS .creds file (user JWT and seed) or an NKey user seed file (SU…), told apart by their content (keyledger nats-credentials writes both)")
	fs.StringVar(&c.natsTLSCA, "nats-tls-ca", "", "with --nats-url: CA certificates to trust for the NATS server (PEM)")
	fs.StringVar(&c.natsTLSCert, "nats-tls-cert", "", "with --nats-url: client certificate for mutual TLS (PEM)")
	fs.StringVar(&c.natsTLSKey, "nats-tls-key", "", "with --nats-url: key of --nats-tls-cert (PEM)")
	fs.StringVar(&c.natsInbox, "nats-inbox-prefix", "", "with --nats-url: the inbox prefix NATS replies come to (default _INBOX; audit: "+events.SubscriberInbox+", the one the subscriber credential may read)")
	fs.IntVar(&c.replicas, "stream-replicas", 1, "with --nats-url: replicas of the stream and buckets when keyledger creates them (1, 3 or 5); existing ones with fewer are refused, never changed")
	fs.BoolVar(&c.fsync, "fsync", true, "embedded NATS: sync every write to disk before acknowledging it (false: sync every 2 minutes)")
	fs.StringVar(&c.keyPrefix, "key-prefix", "c8k", "prefix of minted keys: lower-case letters and digits")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.config, "config", "", "read flags not given on the command line or in KEYLEDGER_* variables from this YAML (.yaml, .yml) or TOML (.toml) file")
	c.signing.register(fs)
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	// Every line logged with a request's context names the request.
	switch c.logFormat {
	case "json":
		return slog.New(khttp.LogHandler(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(khttp.LogHandler(slog.NewTextHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", c.logFormat)
}

// parse reads args, then fills every flag not given on the command line
// from KEYLEDGER_<FLAG> (upper case, dashes as underscores), then from the
// --config file if the command has that flag.
func parse(fs *flag.FlagSet, args []string) error {
	_, err := parseSources(fs, args)
	return err
}

// parseSources is parse, saying where each flag's value came from.
func parseSources(fs *flag.FlagSet, args []string) (map[string]configSource, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	sources := map[string]configSource{}
	fs.VisitAll(func(f *flag.Flag) { sources[f.Name] = fromDefault })
	fs.Visit(func(f *flag.Flag) { sources[f.Name] = fromFlag })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if sources[f.Name] == fromFlag || err != nil {
			return
		}
		env := EnvName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
			sources[f.Name] = fromEnv
		}
	})
	if err != nil {
		return nil, err
	}
	cfg := fs.Lookup("config")
	if cfg == nil || cfg.Value.String() == "" {
		return sources, nil
	}
	path := cfg.Value.String()
	settings, err := readConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	for name, v := range settings {
		if fs.Lookup(name) == nil || sources[name] != fromDefault {
			continue // a flag of serve only, or given on the command line or in the environment
		}
		if err := fs.Set(name, v); err != nil {
			return nil, fmt.Errorf("--config %s: %s: %w", path, name, err)
		}
		sources[name] = fromFile
	}
	return sources, nil
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return "KEYLEDGER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// natsOptions are the connection options for --nats-url.
func (c *common) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.natsCreds != "" {
		creds, err := events.CredentialsOption(c.natsCreds)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		opts = append(opts, creds)
	}
	if c.natsTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.natsTLSCA))
	}
	if c.natsInbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.natsInbox))
	}
	if (c.natsTLSCert == "") != (c.natsTLSKey == "") {
		return nil, fmt.Errorf("--nats-tls-cert and --nats-tls-key go together")
	}
	if c.natsTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.natsTLSCert, c.natsTLSKey))
	}
	return opts, nil
}

// serveFlags are the flags of `keyledger serve`.
type serveFlags struct {
	common
	httpAddr         string
	maxKeyLifetime   time.Duration
	shutdownTimeout  time.Duration
	startTimeout     time.Duration
	natsListen       string
	oidcIssuer       string
	oidcAudience     string
	oidcJWKSURL      string
	oidcRolesClaim   string
	oidcGroupsClaim  string
	oidcClientID     string
	oidcCLIClientID  string
	githubKeysURL    string
	githubKeysFile   string
	leakAction       string
	oidcClientSecret string
	oidcScopes       string
	publicURL        string
	public           *url.URL
	oidcManagerGroup string
	managerGroup     domain.GroupPattern
	authFailureLimit int
	verifyRateLimit  int
	writeRateLimit   int
	maxKeysPerOrg    int
	rateLimitClients int
	corsOrigins      string
	usageFlush       time.Duration
	outcomeFlush     time.Duration
	outcomeMaxBytes  int64
	checkpointEvery  time.Duration
	snapshotEvery    uint64
	commandTimeout   time.Duration
	readHeader       time.Duration
	readBody         time.Duration
	maxInFlight      int
	maxStreams       int
	maxStaleness     time.Duration
	maxWaiting       int
	maxPerClient     int
	webhooksHTTP     bool
	webhooksPrivate  bool
	webhookKey       string
	printConfig      bool
}

// parseServe reads serve's flags. With --print-config it writes the
// effective configuration to stdout, and the caller stops there.
func parseServe(args []string, stdout, stderr io.Writer) (*serveFlags, error) {
	fs, f := serveFlagSet(stderr)
	sources, err := parseSources(fs, args)
	if err != nil {
		return nil, err
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.printConfig {
		return f, printConfig(stdout, fs, sources)
	}
	return f, nil
}

func serveFlagSet(out io.Writer) (*flag.FlagSet, *serveFlags) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &serveFlags{}
	f.common.register(fs)
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	fs.DurationVar(&f.maxKeyLifetime, "max-key-lifetime", 365*24*time.Hour, "latest expires_at a new key may have, from now")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on SIGINT/SIGTERM")
	fs.DurationVar(&f.startTimeout, "start-timeout", 0, "how long the start may wait for NATS, the JetStream leader, the stream and its buckets before it gives up (0: until stopped)")
	fs.StringVar(&f.natsListen, "nats-listen", "", "open the embedded NATS server's client port here (host:port), with generated credentials")
	fs.StringVar(&f.oidcIssuer, "oidc-issuer", "", "sign people in with JWTs from this OpenID Connect issuer")
	fs.StringVar(&f.oidcAudience, "oidc-audience", "", "with --oidc-issuer: the audience the tokens must name (required)")
	fs.StringVar(&f.oidcJWKSURL, "oidc-jwks-url", "", "with --oidc-issuer: fetch signing keys here instead of by discovery")
	fs.StringVar(&f.oidcRolesClaim, "oidc-roles-claim", "keyledger_roles", "with --oidc-issuer: the claim mapping org ids to roles")
	fs.StringVar(&f.oidcGroupsClaim, "oidc-groups-claim", "groups", "with --oidc-manager-group: the claim listing the person's groups")
	fs.StringVar(&f.oidcClientID, "oidc-client-id", "", "with --oidc-issuer and --public-url: sign managers in on the page, as this client of the provider (authorization code flow with PKCE)")
	fs.StringVar(&f.oidcCLIClientID, "oidc-cli-client-id", "", "with --oidc-issuer: a public client of the provider, with the device authorization grant, that keyledger login signs people in as from a terminal")
	fs.StringVar(&f.oidcClientSecret, "oidc-client-secret", "", "with --oidc-client-id: the client's secret, for a confidential client (KEYLEDGER_OIDC_CLIENT_SECRET keeps it out of the process list)")
	fs.StringVar(&f.oidcScopes, "oidc-scopes", "", "with --oidc-client-id: scopes to ask for beyond openid, email and profile, comma-separated (e.g. groups)")
	fs.StringVar(&f.githubKeysURL, "github-secret-scanning-keys-url", khttp.DefaultGitHubKeysURL, "where GitHub publishes the keys it signs secret scanning reports with (POST /v1/secret-scanning/github); \"\": the route is off")
	fs.StringVar(&f.githubKeysFile, "github-secret-scanning-keys-file", "", "read GitHub's secret scanning keys from this file (what the URL serves) instead: offline")
	fs.StringVar(&f.leakAction, "leak-action", string(khttp.LeakRevoke), "what a reported leak of a live key does: revoke (at once), or notify (record it; the key's managers decide)")
	fs.StringVar(&f.publicURL, "public-url", "", "the base URL people reach keyledger at (e.g. https://keys.example.com); the sign-in's redirect URL is derived from it")
	fs.StringVar(&f.oidcManagerGroup, "oidc-manager-group", "", "with --oidc-issuer: the group whose members manage an org, {org} standing for the org id, e.g. keyledger-{org}-managers")
	fs.IntVar(&f.authFailureLimit, "auth-failure-limit", 20, "failed authentications allowed per client address per minute (0: no limit)")
	fs.IntVar(&f.verifyRateLimit, "verify-rate-limit", 10000, "verifications allowed per client address per second (0: no limit)")
	fs.IntVar(&f.maxKeysPerOrg, "max-keys-per-org", 100000, "most keys not revoked one org may have (and ten times as many in all, revoked ones included); past it a create answers 409 (0: no cap)")
	fs.IntVar(&f.writeRateLimit, "write-rate-limit", 60, "successful creates and rotations allowed per owner (a person, or whoever minted the key writing) per minute, in bursts of as many; revocations are never limited (0: no limit)")
	fs.IntVar(&f.rateLimitClients, "rate-limit-clients", khttp.DefaultRateLimitClients, "clients (IPv4 addresses, IPv6 /64s) each rate limit tracks; past it, untracked clients share one budget")
	fs.StringVar(&f.corsOrigins, "cors-origins", "", "comma-separated origins allowed to call the API from a browser (none by default)")
	fs.DurationVar(&f.usageFlush, "usage-flush-interval", time.Minute, "how often this instance shares its keys' last use (at least 1m)")
	fs.DurationVar(&f.outcomeFlush, "usage-outcomes-flush-interval", time.Minute, "how often this instance publishes its keys' verification outcomes and callers (at least 1s; an instance killed loses at most this much)")
	fs.Int64Var(&f.outcomeMaxBytes, "usage-outcomes-max-bytes", events.DefaultOutcomeMaxBytes, "most bytes the stream "+events.OutcomeStream+" keeps when it is created (its oldest batches go first; the rollup holds them)")
	fs.DurationVar(&f.checkpointEvery, "checkpoint-interval", time.Minute, "how often a signed checkpoint covers the new events")
	fs.DurationVar(&f.commandTimeout, "command-timeout", 5*time.Second, "how long a write may wait on NATS before it answers 503 unavailable")
	fs.DurationVar(&f.readHeader, "read-header-timeout", 10*time.Second, "how long a client may take to send its request headers")
	fs.DurationVar(&f.maxStaleness, "max-staleness", 0, "fail closed: once this instance has not been seen holding the whole stream for this long (NATS unreachable, or its feed stalled), verifications and key sign-ins answer 503 (0: keep answering from memory)")
	fs.DurationVar(&f.readBody, "read-body-timeout", khttp.DefaultReadBodyTimeout, "how long a client may take to send a request body, which is read before the request takes a slot")
	fs.IntVar(&f.maxInFlight, "max-in-flight", khttp.DefaultMaxInFlight, "requests served at once; past it, 503 at once")
	fs.IntVar(&f.maxStreams, "max-event-streams", khttp.DefaultMaxStreams, "event streams open at once; past it, 503 at once")
	fs.IntVar(&f.maxWaiting, "max-waiting", khttp.DefaultMaxWaiting, "requests waiting at once for a sequence (?min_seq, a write for its own event), which hold no request slot; past it, 503 at once")
	fs.IntVar(&f.maxPerClient, "max-in-flight-per-client", khttp.DefaultMaxInFlightPerClient, "requests and streams one client (IPv4 address, IPv6 /64) may have under way; past it, 429 at once (0: no limit)")
	fs.Uint64Var(&f.snapshotEvery, "snapshot-every", 100000, "events between snapshots of the projections (a start replays only what follows the newest)")
	fs.BoolVar(&f.webhooksHTTP, "webhooks-allow-http", false, "let webhook endpoints be http:// URLs (for tests and private networks; https otherwise)")
	fs.BoolVar(&f.webhooksPrivate, "webhooks-allow-private", false, "let webhook deliveries connect to loopback, private and link-local addresses (for tests and private networks); metadata services stay refused")
	fs.StringVar(&f.webhookKey, "webhook-secrets-key", "", "AES-256 key file (mode 0600) that webhook URLs and signing secrets are sealed with in NATS, created if missing; every instance of a deployment needs the same file; default <data-dir>/webhook-secrets.key on the embedded store; with --nats-url and none given, webhooks are off")
	fs.BoolVar(&f.printConfig, "print-config", false, "print the effective configuration (secrets masked) and exit")
	return fs, f
}

// check refuses settings that cannot work together, and fills defaults
// that depend on other settings.
func (f *serveFlags) check() error {
	if f.maxStaleness < 0 {
		return fmt.Errorf("--max-staleness must not be negative")
	}
	if f.checkpointEvery < time.Second {
		return fmt.Errorf("--checkpoint-interval must be at least 1s")
	}
	if f.usageFlush < time.Minute {
		return fmt.Errorf("--usage-flush-interval must be at least 1m")
	}
	if f.outcomeFlush < time.Second {
		return fmt.Errorf("--usage-outcomes-flush-interval must be at least 1s")
	}
	if f.leakAction != string(khttp.LeakRevoke) && f.leakAction != string(khttp.LeakNotify) {
		return fmt.Errorf("--leak-action must be revoke or notify")
	}
	if f.oidcClientID != "" {
		if f.oidcIssuer == "" || f.publicURL == "" {
			return fmt.Errorf("--oidc-client-id needs --oidc-issuer and --public-url")
		}
		if f.oidcAudience == "" {
			f.oidcAudience = f.oidcClientID // the ID tokens name the client
		}
	}
	if f.oidcIssuer != "" && f.oidcAudience == "" {
		return fmt.Errorf("--oidc-issuer needs --oidc-audience")
	}
	if f.oidcCLIClientID != "" && f.oidcIssuer == "" {
		return fmt.Errorf("--oidc-cli-client-id needs --oidc-issuer")
	}
	if f.publicURL != "" {
		u, err := url.Parse(f.publicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("--public-url must be an absolute http or https URL, such as https://keys.example.com")
		}
		if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
			return fmt.Errorf("--public-url %s: sessions need https, except on a loopback address", f.publicURL)
		}
		f.public = u
	}
	if f.oidcManagerGroup != "" {
		if f.oidcIssuer == "" {
			return fmt.Errorf("--oidc-manager-group needs --oidc-issuer")
		}
		g, err := domain.ParseGroupPattern(f.oidcManagerGroup)
		if err != nil {
			return fmt.Errorf("--oidc-manager-group: %s", domain.ErrorMessage(err))
		}
		f.managerGroup = g
	}
	for name, v := range map[string]int{"--max-in-flight": f.maxInFlight, "--max-event-streams": f.maxStreams, "--max-waiting": f.maxWaiting} {
		if v < 1 {
			return fmt.Errorf("%s must be at least 1", name)
		}
	}
	if f.maxPerClient < 0 {
		return fmt.Errorf("--max-in-flight-per-client must be 0 (no limit) or more")
	}
	if f.readBody <= 0 || f.readHeader <= 0 {
		return fmt.Errorf("--read-header-timeout and --read-body-timeout must be more than 0")
	}
	if f.rateLimitClients < 1 {
		return fmt.Errorf("--rate-limit-clients must be at least 1")
	}
	if f.natsListen != "" && f.natsURL != "" {
		return fmt.Errorf("--nats-listen opens the embedded server's port; it cannot go with --nats-url")
	}
	return nil
}

// loopbackHost reports whether host names this machine only.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
