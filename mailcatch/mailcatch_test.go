package mailcatch_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mail "github.com/wneessen/go-mail"
	mailsmtp "github.com/wneessen/go-mail/smtp"

	"github.com/tidings-health/tidings/mailcatch"
)

func mustStart(t *testing.T, opts mailcatch.Options) *mailcatch.Server {
	t.Helper()
	s, err := mailcatch.Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

func newMsg(t *testing.T, body string) *mail.Msg {
	t.Helper()
	m := mail.NewMsg()
	if err := m.From("Tidings <notices@example.org>"); err != nil {
		t.Fatal(err)
	}
	if err := m.To("patient@example.net"); err != nil {
		t.Fatal(err)
	}
	m.Subject("hello")
	m.SetBodyString(mail.TypeTextPlain, body)
	return m
}

func newClient(t *testing.T, s *mailcatch.Server, policy mail.TLSPolicy, extra ...mail.Option) *mail.Client {
	t.Helper()
	host, port := hostPort(t, s.Addr())
	tlsCfg := &tls.Config{ServerName: host, RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12}
	opts := append([]mail.Option{
		mail.WithPort(port),
		mail.WithTLSPolicy(policy),
		mail.WithTLSConfig(tlsCfg),
		mail.WithTimeout(5 * time.Second),
	}, extra...)
	c, err := mail.NewClient(host, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ehlo opens a plain connection and returns the server's EHLO capabilities.
func ehlo(t *testing.T, addr string) *mailsmtp.Client {
	t.Helper()
	c, err := mailsmtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

func TestSTARTTLSDeliveryWritesEML(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	s := mustStart(t, mailcatch.Options{Dir: dir, STARTTLS: true})
	if s.CertPool() == nil {
		t.Fatal("CertPool is nil with STARTTLS")
	}

	if err := newClient(t, s, mail.TLSMandatory).DialAndSend(newMsg(t, "your share is $45.20")); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if !m.TLS {
		t.Error("Message.TLS = false after STARTTLS")
	}
	if m.From != "notices@example.org" {
		t.Errorf("From = %q", m.From)
	}
	if len(m.To) != 1 || m.To[0] != "patient@example.net" {
		t.Errorf("To = %q", m.To)
	}
	if !bytes.Contains(m.Data, []byte("your share is $45.20")) {
		t.Errorf("Data lacks the body:\n%s", m.Data)
	}

	if filepath.Dir(m.Path) != dir {
		t.Fatalf("Path %q not in %q", m.Path, dir)
	}
	if !regexp.MustCompile(`^1-\d+\.eml$`).MatchString(filepath.Base(m.Path)) {
		t.Errorf("file name %q, want 1-<nanos>.eml", filepath.Base(m.Path))
	}
	raw, err := os.ReadFile(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	wantHead := "X-Mailcatch-From: <notices@example.org>\r\nX-Mailcatch-To: <patient@example.net>\r\n"
	if !bytes.HasPrefix(raw, []byte(wantHead)) {
		t.Errorf("file does not start with the envelope headers:\n%.200s", raw)
	}
	if !bytes.Equal(raw[len(wantHead):], m.Data) {
		t.Error("file after the envelope headers differs from Message.Data")
	}
	if fi, err := os.Stat(m.Path); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestWithoutSTARTTLSNotAdvertised(t *testing.T) {
	s := mustStart(t, mailcatch.Options{})
	if s.CertPool() != nil {
		t.Error("CertPool non-nil without TLS")
	}
	if ok, _ := ehlo(t, s.Addr()).Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS advertised with STARTTLS=false")
	}

	// A client that insists on TLS gets nowhere, and nothing is stored.
	if err := newClient(t, s, mail.TLSMandatory).DialAndSend(newMsg(t, "x")); err == nil {
		t.Fatal("TLSMandatory send succeeded against a server without STARTTLS")
	}
	// An opportunistic client delivers in plaintext, and the message says so.
	if err := newClient(t, s, mail.TLSOpportunistic).DialAndSend(newMsg(t, "plain")); err != nil {
		t.Fatalf("opportunistic send: %v", err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1 (the TLSMandatory one must not arrive)", len(msgs))
	}
	if msgs[0].TLS {
		t.Error("Message.TLS = true on a plaintext session")
	}
	if msgs[0].Path != "" {
		t.Errorf("Path = %q with no Dir", msgs[0].Path)
	}
}

func TestSTARTTLSAdvertisedAndAuthOnlyUnderTLS(t *testing.T) {
	s := mustStart(t, mailcatch.Options{STARTTLS: true})
	c := ehlo(t, s.Addr())
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not advertised")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised before TLS")
	}
	host, _ := hostPort(t, s.Addr())
	if err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: s.CertPool()}); err != nil {
		t.Fatalf("StartTLS: %v", err)
	}
	ok, mechs := c.Extension("AUTH")
	if !ok || !strings.Contains(mechs, "PLAIN") {
		t.Fatalf("after TLS AUTH = %v %q, want PLAIN", ok, mechs)
	}
}

func TestUntrustedClientGetsNothingThrough(t *testing.T) {
	s := mustStart(t, mailcatch.Options{STARTTLS: true})
	host, port := hostPort(t, s.Addr())
	// System roots do not know the self-signed certificate.
	c, err := mail.NewClient(host, mail.WithPort(port), mail.WithTLSPolicy(mail.TLSMandatory),
		mail.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DialAndSend(newMsg(t, "x")); err == nil {
		t.Fatal("send succeeded with an untrusted certificate")
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestImplicitTLS(t *testing.T) {
	s := mustStart(t, mailcatch.Options{ImplicitTLS: true})
	c := newClient(t, s, mail.NoTLS, mail.WithSSL())
	if err := c.DialAndSend(newMsg(t, "smtps")); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS {
		t.Error("Message.TLS = false under implicit TLS")
	}
}

func TestUsersRequireAuth(t *testing.T) {
	s := mustStart(t, mailcatch.Options{STARTTLS: true, Users: map[string]string{"tidings": "s3cret"}})

	noAuth := newClient(t, s, mail.TLSMandatory)
	if err := noAuth.DialAndSend(newMsg(t, "x")); err == nil {
		t.Error("send without AUTH accepted although Users is set")
	}
	wrong := newClient(t, s, mail.TLSMandatory, mail.WithSMTPAuth(mail.SMTPAuthPlain),
		mail.WithUsername("tidings"), mail.WithPassword("nope"))
	if err := wrong.DialAndSend(newMsg(t, "x")); err == nil {
		t.Error("send with a wrong password accepted")
	}
	right := newClient(t, s, mail.TLSMandatory, mail.WithSMTPAuth(mail.SMTPAuthPlain),
		mail.WithUsername("tidings"), mail.WithPassword("s3cret"))
	if err := right.DialAndSend(newMsg(t, "ok")); err != nil {
		t.Fatalf("send with the right password: %v", err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	if msgs[0].User != "tidings" {
		t.Errorf("User = %q", msgs[0].User)
	}
}

func TestRejectRcpt(t *testing.T) {
	s := mustStart(t, mailcatch.Options{RejectRcpt: func(rcpt string) *mailcatch.Reply {
		if strings.HasPrefix(rcpt, "gone@") {
			return &mailcatch.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "no such user"}
		}
		return nil
	}})
	c := ehlo(t, s.Addr())
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("gone@example.net")
	var reply *textproto.Error
	if !errors.As(err, &reply) || reply.Code != 550 || !strings.HasPrefix(reply.Msg, "5.1.1 no such user") {
		t.Fatalf("RCPT to a rejected address: %v, want 550 5.1.1 no such user", err)
	}
	if err := c.Rcpt("here@example.net"); err != nil {
		t.Fatalf("RCPT to an accepted address: %v", err)
	}
}

func TestRecipientLimit(t *testing.T) {
	s := mustStart(t, mailcatch.Options{})
	c := ehlo(t, s.Addr())
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	for i := range mailcatch.MaxRecipients {
		if err := c.Rcpt("r" + strconv.Itoa(i) + "@example.net"); err != nil {
			t.Fatalf("RCPT %d: %v", i+1, err)
		}
	}
	err := c.Rcpt("one-too-many@example.net")
	if err == nil || !strings.HasPrefix(err.Error(), "452") {
		t.Fatalf("RCPT %d: %v, want 452", mailcatch.MaxRecipients+1, err)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	s := mustStart(t, mailcatch.Options{})
	c := ehlo(t, s.Addr())
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.net"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.Repeat([]byte("x"), 998)
	line = append(line, '\r', '\n')
	for written := 0; written <= mailcatch.MaxMessageBytes; written += len(line) {
		if _, err := w.Write(line); err != nil {
			break // the server may stop reading once over the limit
		}
	}
	err = w.Close()
	if err == nil || !strings.HasPrefix(err.Error(), "552") {
		t.Fatalf("oversized DATA: %v, want 552", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestMessagesInOrderAndFilesNumbered(t *testing.T) {
	dir := t.TempDir()
	s := mustStart(t, mailcatch.Options{Dir: dir})
	c := newClient(t, s, mail.NoTLS)
	if err := c.DialAndSend(newMsg(t, "first"), newMsg(t, "second"), newMsg(t, "third")); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"first", "second", "third"} {
		if !bytes.Contains(msgs[i].Data, []byte(want)) {
			t.Errorf("message %d is not %q", i, want)
		}
		if !strings.HasPrefix(filepath.Base(msgs[i].Path), strconv.Itoa(i+1)+"-") {
			t.Errorf("message %d file %q", i, msgs[i].Path)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("%d files in dir, want 3", len(entries))
	}
}

// CountOnly counts messages and bytes, keeps none and writes no file, and
// Accepted's channel wakes a waiter on the next message.
func TestCountOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	s := mustStart(t, mailcatch.Options{Dir: dir, STARTTLS: true, CountOnly: true})
	n, size, next := s.Accepted()
	if n != 0 || size != 0 {
		t.Fatalf("before any mail: %d messages, %d bytes", n, size)
	}
	c := newClient(t, s, mail.TLSMandatory)
	if err := c.DialAndSend(newMsg(t, "first")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-next:
	case <-time.After(5 * time.Second):
		t.Fatal("Accepted's channel not closed by a message")
	}
	if err := c.DialAndSend(newMsg(t, "second"), newMsg(t, "third")); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 3)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("WaitFor: %d messages, %v; want none kept", len(msgs), err)
	}
	n, size, _ = s.Accepted()
	if n != 3 || size < 3*int64(len("first")) {
		t.Errorf("Accepted: %d messages, %d bytes", n, size)
	}
	if len(s.Messages()) != 0 {
		t.Error("messages kept")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("message dir created (stat: %v)", err)
	}
}

func TestWaitForStopsOnContextAndClose(t *testing.T) {
	s, err := mailcatch.Start(mailcatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.WaitFor(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor on timeout: %v", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := s.WaitFor(context.Background(), 1)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, mailcatch.ErrClosed) {
			t.Fatalf("WaitFor after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFor still blocked after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Error("still accepting connections after Close")
	}
}

func TestStartOptionsErrors(t *testing.T) {
	if _, err := mailcatch.Start(mailcatch.Options{STARTTLS: true, ImplicitTLS: true}); err == nil {
		t.Error("STARTTLS with ImplicitTLS accepted")
	}
	s := mustStart(t, mailcatch.Options{})
	if _, err := mailcatch.Start(mailcatch.Options{Addr: s.Addr()}); err == nil {
		t.Error("second listener on the same address accepted")
	}
}

func waitOpen(t *testing.T, s *mailcatch.Server, n int) {
	t.Helper()
	if err := s.WaitOpenConnections(waitCtx(t), n); err != nil {
		t.Fatal(err)
	}
}

func TestConnectionsCountedAndNamedOnMessages(t *testing.T) {
	s := mustStart(t, mailcatch.Options{STARTTLS: true})
	c := newClient(t, s, mail.TLSMandatory)
	// Two messages over one session, then one over a second session.
	if err := c.DialAndSend(newMsg(t, "first"), newMsg(t, "second")); err != nil {
		t.Fatal(err)
	}
	if err := c.DialAndSend(newMsg(t, "third")); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitFor(waitCtx(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := []int{msgs[0].Conn, msgs[1].Conn, msgs[2].Conn}; got[0] != 1 || got[1] != 1 || got[2] != 2 {
		t.Errorf("Message.Conn = %v, want [1 1 2]", got)
	}
	if n := s.Connections(); n != 2 {
		t.Errorf("Connections = %d, want 2", n)
	}
	waitOpen(t, s, 0)
}

func TestDropConnections(t *testing.T) {
	s := mustStart(t, mailcatch.Options{STARTTLS: true})
	c := newClient(t, s, mail.TLSMandatory)
	if err := c.DialWithContext(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitOpen(t, s, 1)
	if n := s.DropConnections(); n != 1 {
		t.Fatalf("DropConnections = %d, want 1", n)
	}
	if s.OpenConnections() != 0 {
		t.Errorf("OpenConnections = %d after DropConnections", s.OpenConnections())
	}
	if err := c.Send(newMsg(t, "late")); err == nil {
		t.Fatal("send over a dropped connection succeeded")
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestIdleTimeoutAnswers421(t *testing.T) {
	s := mustStart(t, mailcatch.Options{IdleTimeout: 50 * time.Millisecond})
	c := ehlo(t, s.Addr())
	waitOpen(t, s, 0) // the catcher hung up on the idle client
	// The 421 waits in the client's socket: it is what the next command reads.
	err := c.Mail("a@example.org")
	var reply *textproto.Error
	if !errors.As(err, &reply) || reply.Code != 421 {
		t.Fatalf("MAIL after the idle timeout: %v, want 421", err)
	}
}

func TestHangUpAfterDataKeepsMessageWithoutAnswer(t *testing.T) {
	s := mustStart(t, mailcatch.Options{HangUpAfterData: func(to []string) bool {
		return strings.HasPrefix(to[0], "cut@")
	}})
	c := ehlo(t, s.Addr())
	send := func(rcpt string) error {
		if err := c.Mail("a@example.org"); err != nil {
			return err
		}
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
			return err
		}
		return w.Close()
	}
	if err := send("fine@example.net"); err != nil {
		t.Fatalf("first message: %v", err)
	}
	err := send("cut@example.net")
	var reply *textproto.Error
	if err == nil || errors.As(err, &reply) {
		t.Fatalf("end of DATA: %v, want a lost connection and no reply", err)
	}
	msgs := s.Messages()
	if len(msgs) != 2 || msgs[1].To[0] != "cut@example.net" {
		t.Fatalf("messages %+v, want both kept", msgs)
	}
	waitOpen(t, s, 0)
}
