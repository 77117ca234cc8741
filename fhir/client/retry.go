package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = 20 * time.Second
	// maxRetryAfter caps how long a Retry-After header can make us wait.
	maxRetryAfter = 60 * time.Second
)

// parseRetryAfter reads a Retry-After header (RFC 9110 section 10.2.3):
// delay-seconds or an HTTP-date. It returns false for anything else. The
// delay is clamped to [0, maxRetryAfter].
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			// Too many digits to parse still means "later than our cap".
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// backoff is the wait before retry n (0-based): exponential with "equal
// jitter", i.e. uniformly in [d/2, d] with d = base * 2^n, capped.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffBase<<n, backoffMax)
	}
	half := d / 2
	return half + rand.N(half+1)
}

// retryableStatus says whether a status is worth another try: 429 and 5xx
// except 501 Not Implemented, which will not change.
func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || (code >= 500 && code <= 599 && code != http.StatusNotImplemented)
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transportError describes a failed round trip without quoting the error's
// own text, which (as a *url.Error) contains the full URL and query.
func transportError(method, path string, err error) error {
	what := "network error"
	var (
		netErr  net.Error
		errno   syscall.Errno
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		recErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrRedirectRefused):
		what = "redirect to another host refused"
	case errors.Is(err, errTooManyRedirects):
		what = "too many redirects"
	case errors.Is(err, ErrPrivateAddress):
		what = "address refused: not a public address"
	case errors.Is(err, context.Canceled):
		what = "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		what = "deadline exceeded"
	case errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &hostErr):
		what = "TLS certificate not accepted"
	case errors.As(err, &recErr):
		what = "TLS handshake failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		what = "timeout"
	case errors.As(err, &errno):
		what = "network error: " + errno.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		what = "connection closed by server"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &opError{method: method, path: path, what: what, err: err}
}

// retryableTransport says whether a round-trip failure may be retried:
// network failures yes; a refused redirect or address, or the caller's
// context, no.
func retryableTransport(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrRedirectRefused) || errors.Is(err, ErrInvalidResponse) || errors.Is(err, ErrPrivateAddress) {
		return false
	}
	var certErr *tls.CertificateVerificationError
	return !errors.As(err, &certErr)
}
