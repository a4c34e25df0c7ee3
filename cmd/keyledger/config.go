package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// common are the flags every command that touches the store shares.
type common struct {
	dataDir   string
	natsURL   string
	fsync     bool
	keyPrefix string
	logFormat string
	logLevel  string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory of the embedded NATS server's JetStream store")
	fs.StringVar(&c.natsURL, "nats-url", "", "use this NATS server or cluster (comma-separated URLs) instead of the embedded one")
	fs.BoolVar(&c.fsync, "fsync", true, "embedded NATS: sync every write to disk before acknowledging it (false: sync every 2 minutes)")
	fs.StringVar(&c.keyPrefix, "key-prefix", "c8k", "prefix of minted keys: lower-case letters and digits")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", c.logFormat)
}

// parse reads args, then fills every flag not given on the command line
// from KEYLEDGER_<FLAG> (upper case, dashes as underscores).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := EnvName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return "KEYLEDGER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// serveFlags are the flags of `keyledger serve`.
type serveFlags struct {
	common
	httpAddr        string
	maxKeyLifetime  time.Duration
	shutdownTimeout time.Duration
}

func parseServe(args []string, out io.Writer) (*serveFlags, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &serveFlags{}
	f.common.register(fs)
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	fs.DurationVar(&f.maxKeyLifetime, "max-key-lifetime", 365*24*time.Hour, "latest expires_at a new key may have, from now")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on SIGINT/SIGTERM")
	return f, parse(fs, args)
}
