package events

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// credsJWTMarker opens the user JWT of a NATS .creds file (nsc and
// keyledger nats-credentials write it so).
const credsJWTMarker = "-----BEGIN NATS USER JWT-----"

// maxCredentialFile bounds what CredentialsOption reads of a file.
const maxCredentialFile = 64 << 10

// CredentialsOption is the connection option for a NATS credential file,
// told by its content rather than its name: an NKey user seed (one line,
// "SU…"), or a .creds file (a user JWT and its seed). A file that is
// neither is an error naming it and what was expected, so that a wrong
// file never reaches the server as a bare "Authorization Violation". The
// error never quotes the file: it may hold a secret.
func CredentialsOption(path string) (nats.Option, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxCredentialFile {
		return nil, fmt.Errorf("%s is larger than %d KiB: not a NATS credential (a seed or a .creds file is a few hundred bytes)", path, maxCredentialFile>>10)
	}
	if bytes.Contains(raw, []byte(credsJWTMarker)) {
		if _, err := nkeys.ParseDecoratedNKey(raw); err != nil {
			return nil, fmt.Errorf("%s holds a NATS user JWT but no usable user seed after it: %w", path, err)
		}
		return nats.UserCredentials(path), nil
	}
	seed := bytes.TrimSpace(raw)
	if bytes.HasPrefix(seed, []byte("SU")) {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("%s starts like an NKey user seed (SU…) but is not a valid one: %w", path, err)
		}
		kp.Wipe()
		return nats.NkeyOptionFromSeed(path)
	}
	what := "neither an NKey user seed (one line starting with SU) nor a .creds file (starting with " + credsJWTMarker + ")"
	if len(seed) > 1 && seed[0] == 'S' && bytes.IndexByte([]byte("OAN"), seed[1]) >= 0 {
		what = "the seed of an operator, an account or a server, not of a user: give the user's seed (SU…) or its .creds file"
	}
	return nil, fmt.Errorf("%s is %s", path, what)
}
