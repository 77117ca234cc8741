package mailcatch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Limits the catcher enforces on every session.
const (
	MaxMessageBytes = 10 << 20 // 10 MiB
	MaxRecipients   = 50
	ioTimeout       = 60 * time.Second
)

// ErrClosed is returned by WaitFor when the server was closed before enough
// messages arrived.
var ErrClosed = errors.New("mailcatch: server closed")

// Options configures a catcher. The zero value listens on a free loopback
// port, keeps messages in memory only and offers no TLS.
type Options struct {
	// Addr is the address to listen on; "127.0.0.1:0" when empty.
	Addr string
	// Dir, when set, receives each accepted message as <n>-<unix nanos>.eml:
	// the raw message as received, preceded by X-Mailcatch-From and
	// X-Mailcatch-To headers carrying the envelope. It is created (0700) if
	// missing. When empty, messages are kept in memory only.
	Dir string
	// STARTTLS offers STARTTLS with a self-signed ECDSA certificate for
	// 127.0.0.1, ::1 and localhost; CertPool trusts it.
	STARTTLS bool
	// Certificate, when set, is the certificate STARTTLS or ImplicitTLS
	// offers instead of the generated one (a test that plays a relay
	// whose certificate some other step made); CertPool and CertPEM then
	// hold its leaf.
	Certificate *tls.Certificate
	// ImplicitTLS makes the listener speak TLS from the first byte (SMTPS,
	// as on port 465) with the same self-signed certificate. STARTTLS is then
	// not offered, since the session is already encrypted.
	ImplicitTLS bool
	// Users, when non-nil, makes AUTH PLAIN mandatory before MAIL FROM and
	// checks the credentials against it (user name → password). When nil,
	// AUTH PLAIN is still offered and any credentials are accepted. AUTH is
	// only ever offered under TLS.
	Users map[string]string
	// RejectRcpt, when set, is asked about every RCPT TO; a non-nil Reply is
	// sent to the client instead of accepting the recipient. Tests use it to
	// play a server that refuses mail.
	RejectRcpt func(rcpt string) *Reply
	// HangUpAfterData, when set, is asked about every message once it has
	// been received in full; on true the catcher keeps the message and
	// drops the connection without answering, so the client cannot know
	// that it was taken. Tests use it to play a connection lost at the end
	// of DATA.
	HangUpAfterData func(to []string) bool
	// IdleTimeout is how long a connection may wait for the client's next
	// command before the catcher answers 421 and hangs up, as real servers
	// do with idle clients; 60 s when zero.
	IdleTimeout time.Duration
	// CountOnly keeps no message: Accepted counts them and their bytes, and
	// Messages and WaitFor return none. For measurements that send many
	// thousands of messages; Dir is then ignored.
	CountOnly bool
}

// Reply is an SMTP reply the catcher sends instead of accepting a command.
type Reply struct {
	Code     int    // e.g. 550 or 451
	Enhanced [3]int // e.g. {5, 1, 1}; all zero for none
	Text     string
}

// Message is one accepted message.
type Message struct {
	From string   // envelope sender (MAIL FROM)
	To   []string // envelope recipients (RCPT TO), in order
	Data []byte   // the message exactly as received after DATA
	Path string   // the .eml file, "" when Options.Dir is empty
	TLS  bool     // the session was under TLS when DATA was sent
	User string   // the AUTH user name, "" when the client did not authenticate
	Conn int      // the connection that carried it: 1 for the first accepted, and so on
}

// Server is a running catcher. Its methods are safe for concurrent use.
type Server struct {
	smtp  *smtp.Server
	ln    net.Listener
	opts  Options
	pool  *x509.CertPool
	der   []byte        // the self-signed certificate, when TLS is offered
	done  chan struct{} // closed when Serve has returned
	close sync.Once

	mu       sync.Mutex
	conns    map[*countedConn]struct{} // open connections
	accepted int                       // connections accepted so far
	msgs     []Message
	seq      int           // messages accepted
	bytes    int64         // their size as received
	arrived  chan struct{} // closed and replaced on every accepted message
	closed   bool
	closeErr error
}

// Start listens and serves in the background until Close.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.STARTTLS && opts.ImplicitTLS {
		return nil, errors.New("mailcatch: STARTTLS and ImplicitTLS are mutually exclusive")
	}
	if opts.CountOnly {
		opts.Dir = ""
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("mailcatch: create message dir: %w", err)
		}
	}
	s := &Server{opts: opts, done: make(chan struct{}), arrived: make(chan struct{}),
		conns: map[*countedConn]struct{}{}}

	var tlsConfig *tls.Config
	if opts.STARTTLS || opts.ImplicitTLS {
		cert, pool, err := certificate(opts.Certificate)
		if err != nil {
			return nil, err
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.pool = pool
		s.der = cert.Certificate[0]
	}

	tcp, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("mailcatch: listen: %w", err)
	}
	var ln net.Listener = &countingListener{Listener: tcp, srv: s}
	if opts.ImplicitTLS {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.ln = ln

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Addr = ln.Addr().String()
	srv.Domain = "localhost"
	srv.MaxMessageBytes = MaxMessageBytes
	srv.MaxRecipients = MaxRecipients
	srv.ReadTimeout = ioTimeout
	if opts.IdleTimeout > 0 {
		srv.ReadTimeout = opts.IdleTimeout
	}
	srv.WriteTimeout = ioTimeout
	// The server's own log lines would go to stderr of whoever embeds us
	// (a test run, `tidings dev`); keep them out.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.STARTTLS {
		srv.TLSConfig = tlsConfig
	}
	s.smtp = srv

	go func() {
		defer close(s.done)
		_ = srv.Serve(ln) // returns when Close closes the listener
	}()
	return s, nil
}

// Addr returns the host:port the catcher listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CertPEM returns the catcher's self-signed certificate in PEM, for a
// client configured by a CA file (TIDINGS_SMTP_CA_FILE); nil without TLS.
func (s *Server) CertPEM() []byte {
	if s.der == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.der})
}

// CertPool returns a pool that trusts the catcher's certificate, or nil when
// it offers no TLS.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Connections returns how many connections the catcher has accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// OpenConnections returns how many connections are open now.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitOpenConnections blocks until exactly n connections are open (the
// catcher notices a client's hang-up on its own goroutine) or ctx ends.
func (s *Server) WaitOpenConnections(ctx context.Context, n int) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		open := s.OpenConnections()
		if open == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mailcatch: %d connections open, waiting for %d: %w", open, n, ctx.Err())
		case <-tick.C:
		}
	}
}

// DropConnections closes every open connection without a word, as a server
// that restarts or sheds idle clients does, and returns how many it closed.
func (s *Server) DropConnections() int {
	s.mu.Lock()
	open := make([]*countedConn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	return len(open)
}

// Messages returns the messages accepted so far, in order of acceptance.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneMessages(s.msgs)
}

// Accepted returns how many messages have been accepted so far and their
// total size, and a channel that is closed when the next one is (or when the
// server closes): a caller waits for the Nth message without polling.
func (s *Server) Accepted() (n int, bytes int64, next <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, s.bytes, s.arrived
}

// WaitFor blocks until at least n messages have been accepted and returns
// them all (none with CountOnly). It returns the context's error when ctx
// ends first, and ErrClosed when the server is closed first.
func (s *Server) WaitFor(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if s.seq >= n {
			out := cloneMessages(s.msgs)
			s.mu.Unlock()
			return out, nil
		}
		arrived, closed := s.arrived, s.closed
		s.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("mailcatch: waiting for %d messages: %w", n, ctx.Err())
		case <-arrived:
		}
	}
}

// Close stops listening, drops open sessions and waits for the server to
// stop. Closing twice is harmless.
func (s *Server) Close() error {
	s.close.Do(func() {
		err := s.smtp.Close()
		// Serve registers the listener with go-smtp in its own goroutine, so
		// a Close right after Start may come first: close it ourselves too.
		lnErr := s.ln.Close()
		<-s.done
		if errors.Is(err, net.ErrClosed) || errors.Is(err, smtp.ErrServerClosed) {
			err = nil
		}
		if err == nil && lnErr != nil && !errors.Is(lnErr, net.ErrClosed) {
			err = lnErr
		}
		s.mu.Lock()
		s.closed = true
		s.closeErr = err
		close(s.arrived) // wake waiters so they see closed
		s.arrived = make(chan struct{})
		s.mu.Unlock()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// accept counts a message of size bytes, and unless CountOnly records it
// and writes its file.
func (s *Server) accept(m Message, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.seq + 1
	if s.opts.Dir != "" {
		path := filepath.Join(s.opts.Dir, fmt.Sprintf("%d-%d.eml", n, time.Now().UnixNano()))
		if err := writeEML(path, m); err != nil {
			// A 4xx makes the client keep the message and retry later.
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Could not store message"}
		}
		m.Path = path
	}
	s.seq = n
	s.bytes += size
	if !s.opts.CountOnly {
		s.msgs = append(s.msgs, m)
	}
	close(s.arrived)
	s.arrived = make(chan struct{})
	return nil
}

func writeEML(path string, m Message) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "X-Mailcatch-From: <%s>\r\n", m.From)
	to := make([]string, len(m.To))
	for i, rcpt := range m.To {
		to[i] = "<" + rcpt + ">"
	}
	fmt.Fprintf(&buf, "X-Mailcatch-To: %s\r\n", strings.Join(to, ", "))
	buf.Write(m.Data)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func cloneMessages(in []Message) []Message {
	out := make([]Message, len(in))
	for i, m := range in {
		m.To = append([]string(nil), m.To...)
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// countingListener numbers the connections it accepts and keeps the open
// ones, below any TLS.
type countingListener struct {
	net.Listener
	srv *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countedConn{Conn: c, srv: l.srv}
	l.srv.mu.Lock()
	l.srv.accepted++
	cc.id = l.srv.accepted
	l.srv.conns[cc] = struct{}{}
	l.srv.mu.Unlock()
	return cc, nil
}

// countedConn is one accepted TCP connection.
type countedConn struct {
	net.Conn
	srv  *Server
	id   int
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	})
	return c.Conn.Close()
}

// connOf finds the accepted connection under c's TLS, if any.
func connOf(c *smtp.Conn) *countedConn {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cc, _ := nc.(*countedConn)
	return cc
}

// session is one SMTP session; go-smtp starts a fresh one after STARTTLS.
type session struct {
	srv  *Server
	conn *smtp.Conn
	raw  *countedConn
	from string
	to   []string
	user string
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: s, conn: c, raw: connOf(c)}, nil
}

var _ smtp.AuthSession = (*session)(nil)

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return smtp.ErrAuthFailed
		}
		if users := ss.srv.opts.Users; users != nil {
			want, ok := users[username]
			if !ok || want != password {
				return smtp.ErrAuthFailed
			}
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.opts.Users != nil && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if reject := ss.srv.opts.RejectRcpt; reject != nil {
		if r := reject(to); r != nil {
			return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	if ss.srv.opts.CountOnly {
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return err
		}
		return ss.srv.accept(Message{}, n)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err // ErrDataTooLarge and the like carry their own SMTP code
	}
	_, underTLS := ss.conn.TLSConnectionState()
	m := Message{
		From: ss.from,
		To:   append([]string(nil), ss.to...),
		Data: data,
		TLS:  underTLS,
		User: ss.user,
	}
	if ss.raw != nil {
		m.Conn = ss.raw.id
	}
	if err := ss.srv.accept(m, int64(len(data))); err != nil {
		return err
	}
	if hangUp := ss.srv.opts.HangUpAfterData; hangUp != nil && ss.raw != nil && hangUp(m.To) {
		ss.raw.Close() // the reply below goes nowhere
		return errors.New("mailcatch: hung up after DATA")
	}
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
}

func (ss *session) Logout() error { return nil }

// selfSigned makes a short-lived ECDSA P-256 certificate for the loopback
// names and a pool that trusts exactly it.
// certificate is given, with a pool that trusts its leaf, or a new
// self-signed one when given is nil.
func certificate(given *tls.Certificate) (tls.Certificate, *x509.CertPool, error) {
	if given == nil {
		cert, pool, err := selfSigned()
		if err != nil {
			return cert, nil, fmt.Errorf("mailcatch: generate certificate: %w", err)
		}
		return cert, pool, nil
	}
	if len(given.Certificate) == 0 {
		return tls.Certificate{}, nil, errors.New("mailcatch: the given certificate has no leaf")
	}
	leaf, err := x509.ParseCertificate(given.Certificate[0])
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("mailcatch: the given certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return *given, pool, nil
}

func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "mailcatch", Organization: []string{"Tidings dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
