package events

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestAttackUnfitStreamSettingsAreRefused: a stream restored from a forged
// backup (its manifest's configuration is the file's, checked by nothing
// but its own SHA-256), or made by hand, may carry settings that keep
// every deny flag and still move or let others write the history: a
// subject transform stores the events under other subjects than keyledger
// reads a key's by; sources pour another stream's messages in; a counter
// stream refuses keyledger's appends.
func TestAttackUnfitStreamSettingsAreRefused(t *testing.T) {
	want := streamConfig(1)
	for name, change := range map[string]func(*jetstream.StreamConfig){
		"SubjectTransform": func(c *jetstream.StreamConfig) {
			c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: SubjectRoot + ".>", Destination: "elsewhere.>"}
		},
		"Sources": func(c *jetstream.StreamConfig) {
			c.Sources = []*jetstream.StreamSource{{Name: "FORGED"}}
		},
		"MsgCounter": func(c *jetstream.StreamConfig) { c.AllowMsgCounter = true },
	} {
		t.Run(name, func(t *testing.T) {
			have := streamConfig(1)
			change(&have)
			if err := unsafeStream(have, want); err == nil {
				t.Errorf("a stream with %s is taken as fit to hold the history", name)
			}
		})
	}
	if err := unsafeStream(streamConfig(1), want); err != nil {
		t.Errorf("keyledger's own stream is refused: %v", err)
	}
}

// TestAttackHugeCredentialFileIsNotReadWhole: --nats-creds read the whole
// file to tell a seed from a .creds file; a credential is a few hundred
// bytes, and a wrong path (a log, a disk image, /dev/zero) was read into
// memory to the end.
func TestAttackHugeCredentialFileIsNotReadWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.creds")
	if err := os.WriteFile(path, append([]byte("SU"), make([]byte, 32<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := CredentialsOption(path)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a 32 MiB credential file is taken")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("telling a 32 MiB file's kind allocated %d MiB", grew>>20)
	}
}
