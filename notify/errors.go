package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// Errors callers branch on. A delivery error wraps exactly one of ErrNoTLS,
// ErrRejected, ErrTemporary and ErrUnknownOutcome.
var (
	// ErrNoTLS: TLS was required but the server offers no STARTTLS, refused
	// it, or the handshake failed (e.g. an untrusted certificate). Nothing
	// was sent; retrying will not help until the server or the
	// configuration changes.
	ErrNoTLS = errors.New("notify: no TLS to mail server")
	// ErrRejected: the server answered with a permanent (5xx) error, or the
	// session cannot work as configured (e.g. no usable AUTH mechanism).
	// Do not retry this message.
	ErrRejected = errors.New("notify: rejected by mail server")
	// ErrTemporary: a 4xx answer, or a network failure or a timeout before
	// the message was sent in full. Retry later.
	ErrTemporary = errors.New("notify: temporary mail delivery failure")
	// ErrUnknownOutcome: the whole message went out (DATA and its final
	// dot) and the server's answer never came: the connection broke, timed
	// out or was cancelled while waiting for it. The server may have taken
	// the message, so retrying could deliver it twice; only someone who can
	// read the relay's logs can say.
	ErrUnknownOutcome = errors.New("notify: mail delivery outcome unknown")
	// ErrInvalidConfig: NewEmailChannel was given an unusable SMTPConfig.
	ErrInvalidConfig = errors.New("notify: invalid smtp config")
	// ErrInvalidEmail: the Email cannot be sent as it is (bad recipient
	// address, no body, malformed Message-ID). Nothing was sent.
	ErrInvalidEmail = errors.New("notify: invalid email")
)

// DeliveryError describes a failed Send without any recipient address or
// message content: only the server, the stage, the SMTP codes and a generic
// reason. The server's own reply text is dropped, since servers often echo
// the recipient in it.
type DeliveryError struct {
	Server       string // host:port
	Stage        string // connect, greeting, starttls, tls, auth, mail from, rcpt to, data, reset
	Code         int    // SMTP reply code, 0 when the failure was not a reply
	EnhancedCode string // RFC 3463 code such as "5.1.1", "" when none
	Reason       string // generic, fixed text
	Kind         error  // ErrNoTLS, ErrRejected, ErrTemporary or ErrUnknownOutcome
	// cause is a transport error that carries no message data (TLS, x509,
	// network, context), kept for errors.Is/As and shown in Error.
	cause error
}

func (e *DeliveryError) Error() string {
	s := fmt.Sprintf("notify: email via %s failed at %s: %s", e.Server, e.Stage, e.Reason)
	if e.Code != 0 {
		s += fmt.Sprintf(" (smtp %d", e.Code)
		if e.EnhancedCode != "" {
			s += " " + e.EnhancedCode
		}
		s += ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap exposes the kind sentinel and the transport cause, if any.
func (e *DeliveryError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.cause}
}

// transportCause picks, out of err's chain, the part that is known to
// carry no message data, or nil.
func transportCause(err error) error {
	if err == nil {
		return nil
	}
	for _, target := range []error{context.Canceled, context.DeadlineExceeded, os.ErrDeadlineExceeded} {
		if errors.Is(err, target) {
			return target
		}
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return cve
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return ua
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return he
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		return ci
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return rh
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return ae
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return nil
}

// isTLSFailure reports whether err came out of a TLS handshake.
func isTLSFailure(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rh  tls.RecordHeaderError
		ae  tls.AlertError
	)
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &rh) || errors.As(err, &ae)
}
