package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
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
	Token  string `json:"token"` // a management key, or an ID token (SSO)
	// With SSO (the device grant): where to renew the ID token.
	Refresh  string `json:"refresh_token,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
	ClientID string `json:"client_id,omitempty"`
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
	raw, _ := json.MarshalIndent(p, "", "  ")
	return writeWhole(path, raw, 0o600, true)
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
	withSSO := fs.Bool("sso", false, "sign in with the identity provider, in a browser anywhere (the OAuth 2.0 device authorization grant), when the server offers it")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if c.server == "" {
		c.server = "http://127.0.0.1:8080"
	}
	if *withSSO {
		return c.loginSSO(ctx, *name)
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

// loginSSO signs a person in with the server's identity provider by the
// device authorization grant: the provider shows a code to enter in a
// browser anywhere; the ID token it gives is the credential, renewed with
// its refresh token as it expires.
func (c *remote) loginSSO(ctx context.Context, name string) error {
	if err := c.connect(false); err != nil {
		return err
	}
	res, err := c.client.GetCLIConfigWithResponse(ctx)
	if err != nil {
		return unreachable(err)
	}
	if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
		return err
	}
	conf := res.JSON200
	provider, err := oidc.NewProvider(ctx, conf.Issuer)
	if err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("the identity provider %s: %w", conf.Issuer, err)}
	}
	cfg := &oauth2.Config{ClientID: conf.ClientId, Endpoint: provider.Endpoint(), Scopes: conf.Scopes}
	if cfg.Endpoint.DeviceAuthURL == "" {
		return &exitError{code: exitFailed, err: fmt.Errorf("the identity provider %s offers no device authorization: sign in with a management key", conf.Issuer)}
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("device authorization: %w", err)}
	}
	fmt.Fprintf(c.stderr, "To sign in, open %s and enter the code %s\n", printable(da.VerificationURI), printable(da.UserCode))
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return &exitError{code: exitForbidden, err: fmt.Errorf("sign-in: %w", err)}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return &exitError{code: exitFailed, err: errors.New("the identity provider gave no ID token")}
	}
	idTok, err := provider.Verifier(&oidc.Config{ClientID: conf.ClientId}).Verify(ctx, raw)
	if err != nil {
		return &exitError{code: exitForbidden, err: fmt.Errorf("the ID token: %w", err)}
	}
	var claims struct{ Email, Name string }
	_ = idTok.Claims(&claims)
	all, path, err := loadProfiles()
	if err != nil {
		return err
	}
	all.Profiles[name] = profile{Server: c.server, Org: c.org, Token: raw, Refresh: tok.RefreshToken, Issuer: conf.Issuer, ClientID: conf.ClientId}
	if err := all.save(path); err != nil {
		return err
	}
	who := claims.Email
	if who == "" {
		who = claims.Name
	}
	fmt.Fprintf(c.stderr, "signed in to %s as %s (profile %q, in %s)\n", c.server, printable(who), name, path)
	return nil
}

// renewed returns the profile's credential, renewing an ID token that
// has expired (or is about to) with its refresh token, and keeping the
// new one in the profile.
func renewed(ctx context.Context, name string, all profiles, path string) (string, error) {
	p := all.Profiles[name]
	if p.Refresh == "" || p.Issuer == "" || !expiresSoon(p.Token) {
		return p.Token, nil
	}
	provider, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		return "", err
	}
	cfg := &oauth2.Config{ClientID: p.ClientID, Endpoint: provider.Endpoint()}
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: p.Refresh, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return "", fmt.Errorf("the session has ended (%v): keyledger login --sso again", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", errors.New("the identity provider gave no new ID token: keyledger login --sso again")
	}
	p.Token = raw
	if tok.RefreshToken != "" {
		p.Refresh = tok.RefreshToken
	}
	all.Profiles[name] = p
	return raw, all.save(path)
}

// expiresSoon reads a JWT's exp, unverified (the server verifies it): a
// token within a minute of it is renewed first.
func expiresSoon(jwt string) bool {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return false
	}
	return time.Now().Add(time.Minute).Unix() >= claims.Exp
}
