package webhooks

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// ErrRefusedAddress is a dial refused because of where it would connect.
var ErrRefusedAddress = errors.New("webhook address refused")

// NewClient returns the HTTP client deliveries use: no proxy, no
// redirects followed, timeout per attempt, and a dialer that checks every
// address it connects to after DNS resolution (so a name that resolves to
// loopback, a private or link-local address, or a metadata service, even
// on its second lookup, is refused) unless allowPrivate; metadata
// services are refused always.
func NewClient(timeout time.Duration, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip := net.ParseIP(host)
			if ip == nil {
				return &refusal{why: "no address"}
			}
			if why := domain.RefusedAddress(ip, allowPrivate); why != "" {
				return &refusal{why: why}
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  timeout,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// refusal is a dial the address policy refused. It says what kind of
// address it was, never which: the dial error around it names the
// address, and an attempt's error keeps only this (scrub).
type refusal struct{ why string }

func (r *refusal) Error() string {
	switch r.why {
	case "no address":
		return ErrRefusedAddress.Error() + ": the host resolves to something that is no address"
	case "metadata":
		return ErrRefusedAddress.Error() + ": the host resolves to a metadata service's address, which webhooks may never reach"
	}
	return ErrRefusedAddress.Error() + ": the host resolves to a " + r.why + " address (--webhooks-allow-private allows private ones)"
}

func (r *refusal) Is(target error) bool { return target == ErrRefusedAddress }

// refused reports whether err is a dial the address policy refused.
func refused(err error) bool { return errors.Is(err, ErrRefusedAddress) }
