package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"

	"github.com/keyledger/keyledger/domain"
)

// A configuration file (--config, YAML or TOML by its extension) holds
// flags of `keyledger serve` by name at the top level:
//
//	http-addr: 0.0.0.0:8080
//	cors-origins: [https://app.example.com]
//
// Flags given on the command line come first, then KEYLEDGER_* variables,
// then the file, then the defaults. A key that names no flag of serve is an
// error, so that a typo is not silently ignored; other commands take from
// the file the flags they share with serve.

// configSource says where a flag's value came from.
type configSource string

const (
	fromFlag    configSource = "flag"
	fromEnv     configSource = "environment"
	fromFile    configSource = "config file"
	fromDefault configSource = "default"
)

// readConfigFile returns the file's settings by flag name, as flag values.
func readConfigFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	raw := map[string]any{}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&raw); err != nil && err != io.EOF {
			return nil, err
		}
	case ".toml":
		if _, err := toml.Decode(string(data), &raw); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("name it .yaml, .yml or .toml: its extension says how to read it")
	}
	known := serveFlagNames()
	out := map[string]string{}
	for k, v := range raw {
		name := strings.ReplaceAll(k, "_", "-")
		if !known[name] {
			return nil, fmt.Errorf("unknown key %q: not a flag of keyledger serve", k)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("key %q is given twice", name)
		}
		s, err := flagText(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[name] = s
	}
	return out, nil
}

// flagText writes a file's value the way the flag takes it on the command
// line; a list becomes a comma-separated one.
func flagText(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := flagText(e)
			if err != nil {
				return "", err
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("list items cannot hold a comma")
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("a %T is not a flag value: give a string, number, boolean or list", v)
}

// serveFlagNames are the keys a configuration file may hold.
func serveFlagNames() map[string]bool {
	fs, _ := serveFlagSet(io.Discard)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	delete(names, "config")
	delete(names, "print-config")
	return names
}

// printConfig writes the effective configuration as a YAML file that
// --config takes back, each value with where it came from. Secrets are
// masked: passwords and tokens in URLs, and anything shaped like a key.
func printConfig(w io.Writer, fs *flag.FlagSet, sources map[string]configSource) error {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && f.Name != "print-config" {
			names = append(names, f.Name)
		}
	})
	slices.Sort(names)
	fmt.Fprintln(w, "# keyledger serve: the effective configuration, secrets masked.")
	fmt.Fprintln(w, "# Precedence: flag, then KEYLEDGER_* variable, then --config file, then default.")
	for _, name := range names {
		value := maskSecret(fs.Lookup(name).Value.String())
		if strings.HasSuffix(name, "-secret") && value != "" {
			value = "****" // a client secret has no shape to recognise
		}
		out, err := yaml.Marshal(map[string]string{name: value})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s  # %s\n", strings.TrimRight(string(out), "\n"), sources[name])
	}
	return nil
}

// maskSecret hides the credentials a configuration value may carry: the
// password or token of a URL (nats://user:pass@host, nats://token@host),
// and a key. It reads the text, not a parsed URL, so that a URL too broken
// to parse is masked all the same: everything between "://" and the last
// "@" before any query goes, a user name before ":" excepted.
func maskSecret(v string) string {
	if domain.WellFormed(v) {
		return domain.MaskSecret(v)
	}
	parts := strings.Split(v, ",")
	for i, p := range parts {
		scheme := strings.Index(p, "://")
		if scheme < 0 {
			continue
		}
		authority := p[scheme+3:]
		if end := strings.IndexAny(authority, "?#"); end >= 0 {
			authority = authority[:end]
		}
		at := strings.LastIndex(authority, "@")
		if at < 0 {
			continue
		}
		userinfo := "****" // a token
		if user, _, hasPassword := strings.Cut(authority[:at], ":"); hasPassword {
			userinfo = user + ":****"
		}
		parts[i] = p[:scheme+3] + userinfo + p[scheme+3+at:]
	}
	return strings.Join(parts, ",")
}
