// Command keyledger is the API-key lifecycle service: `keyledger serve` runs
// it, `keyledger bootstrap` mints an org's first management key.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// buildVersion is version, or for a development build the commit it was
// built from when the build recorded one ("dev-1a2b3c4d5e6f", "-dirty"
// with uncommitted changes).
func buildVersion() string {
	if version != "dev" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return version
	}
	return version + "-" + rev + dirty
}

const usage = `keyledger — API keys that die the instant they are revoked.

Usage:
  keyledger serve      [flags]   run the service (embedded NATS in ./data by default)
  keyledger bootstrap  --org ORG --name NAME [flags]
                                 mint an org's first management key and print it once
  keyledger audit      export|as-of|verify|pubkey [flags]
                                 read, check and export the history
  keyledger backup     --out FILE [--without-keys]
                                 the stream, the buckets and the keys in one file (mode 0600)
  keyledger restore    --in FILE  that file into an empty system (docs/OPERATORS.md)
  keyledger bench      [--quick]  measure against same-run baselines (docs/PERFORMANCE.md)
  keyledger keygen     FILE      a new signing key (mode 0600); prints its public key
  keyledger nats-credentials --out DIR [--format nkeys|creds] [--routes HOST:PORT,...]
                                 the service's and the read-only NATS credentials for your
                                 own cluster, and the server configuration granting them
  keyledger provision  --signing-key FILE --event-signers FILE [--webhook-secrets-key FILE]
                                 a deployment's shared keys, made once before any instance starts
  keyledger healthcheck [--url URL]
                                 exit 0 only when the instance answers /readyz 200
  keyledger scan       PATH…     find keys in files and directories (exit 1 when it finds one)
  keyledger keys       create|list|get|rotate|revoke|history [--server URL --org ORG --output table|json|yaml]
                                 manage keys on a running server (credential: KEYLEDGER_TOKEN)
  keyledger verify     KEY       is this key valid? (exit 0 only when it is)
  keyledger whoami               the key KEYLEDGER_TOKEN (or the profile) holds
  keyledger login | logout       keep (or forget) a management key for a server, in a profile
  keyledger completion bash|zsh|fish
                                 a shell's completion script, key ids from the server included
  keyledger version

Every flag has an environment variable KEYLEDGER_<FLAG>, e.g. KEYLEDGER_HTTP_ADDR,
and may be set in a --config file (YAML or TOML); a flag wins over its
variable, which wins over the file. "keyledger serve --print-config" shows
the result.
Run "keyledger <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errTampered) {
			fmt.Fprintln(os.Stderr, "keyledger:", err)
		}
		var e *exitError
		if errors.As(err, &e) {
			os.Exit(e.code)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "bootstrap":
		return bootstrap(ctx, args[1:], stdout, stderr)
	case "audit":
		return audit(ctx, args[1:], stdout, stderr)
	case "backup":
		return backupCmd(ctx, args[1:], stdout, stderr)
	case "restore":
		return restoreCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "nats-credentials":
		return natsCredentials(args[1:], stdout, stderr)
	case "provision":
		return provision(args[1:], stderr)
	case "healthcheck":
		return healthcheck(ctx, args[1:], stdout, stderr)
	case "scan":
		return scan(ctx, args[1:], stdout, stderr)
	case "keys":
		return keysCmd(ctx, args[1:], stdout, stderr)
	case "verify":
		return verifyCmd(ctx, args[1:], stdout, stderr)
	case "whoami":
		return whoamiCmd(ctx, args[1:], stdout, stderr)
	case "completion":
		return completionCmd(args[1:], stdout)
	case "__bench-follow":
		return benchFollowCmd(ctx, os.Stdin, stdout)
	case "__complete":
		return completeCmd(ctx, args[1:], stdout, stderr)
	case "login":
		return loginCmd(ctx, args[1:], stdout, stderr)
	case "logout":
		return logoutCmd(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
