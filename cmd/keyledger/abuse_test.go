package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAbusiveClients: a client that sends its headers slowly is cut off, a
// 1 MiB header is refused, and thousands of idle connections do not starve
// verification. Against the real binary, on loopback.
func TestAbusiveClients(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_READ_HEADER_TIMEOUT=1s"}
	p := serveProcess(t, dir, addr, env)

	t.Run("SlowHeadersAreCutOff", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") // and then nothing
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c)
		if took := time.Since(start); err != nil || took > 5*time.Second {
			t.Errorf("the slow client was held %s (%v), want cut off after the 1 s header timeout", took, err)
		}
	})

	t.Run("OneMebibyteHeaderIsRefused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", p.url+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 1<<20))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return // refused before an answer: also fine
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("a 1 MiB header: %d, want 431", res.StatusCode)
		}
	})

	t.Run("IdleConnectionsDoNotStarveVerify", func(t *testing.T) {
		const idle = 2000
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range idle {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("after %d idle connections: %v", len(conns), err)
			}
			conns = append(conns, c)
		}
		start := time.Now()
		res, err := http.Post(p.url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"c8k_x"}`)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if took := time.Since(start); res.StatusCode != http.StatusOK || took > 5*time.Second {
			t.Errorf("verify beside %d idle connections: %d after %s", idle, res.StatusCode, took)
		}
	})
}
