package http_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackLargeUnsignedBodiesAtOnce: a body to the GitHub route that
// claims a signature may be 8 MiB, and is read whole before the signature
// can be checked. Without a bound, anyone could hold 64 such reads per
// address (half a gigabyte) by sending them slowly. Only MaxLargeBodies
// are read at once: the next answers 503 at once, and the others' reads
// stay bounded by the body timeout.
func TestAttackLargeUnsignedBodiesAtOnce(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	open := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /v1/secret-scanning/github HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
			"Github-Public-Key-Identifier: %s\r\nGithub-Public-Key-Signature: MEUCIQDfake\r\n\r\n[", addr, 8<<20-1024, g.id)
		return c
	}
	var held []net.Conn
	for range khttp.MaxLargeBodies {
		held = append(held, open())
	}
	time.Sleep(300 * time.Millisecond) // their reads have begun
	extra := open()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(extra).ReadString('\n')
	if err != nil || !strings.Contains(line, " 503 ") {
		t.Errorf("a large body past the bound: %q %v, want 503 at once", line, err)
	}
	for i, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			t.Errorf("large body %d answered %q before it was sent whole", i, line)
		}
	}
}
