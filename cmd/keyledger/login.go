package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"
)

// profiles are the servers a person has signed in to, kept in
// <os.UserConfigDir>/keyledger/profiles.json, mode 0600: the credential is
// a secret.
type profiles struct {
	Profiles map[string]profile `json:"profiles"`
}

type profile struct {
	Server string `json:"server"`
	Org    string `json:"org,omitempty"`
	Token  string `json:"token"`
}

func profilesPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "keyledger", "profiles.json"), nil
}

func loadProfiles() (profiles, string, error) {
	path, err := profilesPath()
	if err != nil {
		return profiles{}, "", err
	}
	p := profiles{Profiles: map[string]profile{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, path, nil
	}
	if err != nil {
		return p, path, err
	}
	if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
		return p, path, fmt.Errorf("%s may be read by others (mode %04o): chmod 600 %s", path, info.Mode().Perm(), path)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, path, fmt.Errorf("%s: %w", path, err)
	}
	if p.Profiles == nil {
		p.Profiles = map[string]profile{}
	}
	return p, path, nil
}

func (p profiles) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(p, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loginCmd runs `keyledger login`: it reads a management key (without
// echo on a terminal), checks it with the server, and keeps it in a
// profile.
func loginCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &remote{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs, true)
	name := &c.profile
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if c.server == "" {
		c.server = "http://127.0.0.1:8080"
	}
	fmt.Fprintf(stderr, "Paste a management key of %s (it is not shown): ", c.server)
	var key string
	if term.IsTerminal(int(os.Stdin.Fd())) {
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return err
		}
		key = string(b)
	} else {
		line, err := bufio.NewReader(io.LimitReader(os.Stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		key = line
		fmt.Fprintln(stderr)
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return usageError("login: no key given")
	}
	if err := c.connect(false); err != nil {
		return err
	}
	c.token = key // this one, whatever KEYLEDGER_TOKEN or the profile holds
	res, err := c.client.WhoamiWithResponse(ctx, nil)
	if err != nil {
		return unreachable(err)
	}
	if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
		return err
	}
	all, path, err := loadProfiles()
	if err != nil {
		return err
	}
	org := c.org
	if org == "" {
		org = res.JSON200.OrgId
	}
	all.Profiles[*name] = profile{Server: c.server, Org: org, Token: key}
	if err := all.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "signed in to %s as %s of %s (profile %q, in %s)\n", c.server, printable(res.JSON200.Name), org, *name, path)
	return nil
}

// logoutCmd runs `keyledger logout`: it forgets a profile's credential.
func logoutCmd(_ context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("logout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("profile", envOr("KEYLEDGER_PROFILE", "default"), "the profile to forget (KEYLEDGER_PROFILE)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	all, path, err := loadProfiles()
	if err != nil {
		return err
	}
	if _, ok := all.Profiles[*name]; !ok {
		return &exitError{code: exitNotFound, err: fmt.Errorf("no profile %q", *name)}
	}
	delete(all.Profiles, *name)
	if err := all.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "signed out: profile %q forgotten\n", *name)
	return nil
}
