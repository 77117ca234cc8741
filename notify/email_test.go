package notify

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/metrics/metricstest"
)

// Canaries: none of these may ever show up in an error string.
const (
	canaryRcpt  = "canary.r8k2q@example.net"
	canaryLocal = "canary.r8k2q"
	canaryPayer = "Canary R8K2Q Health Plan"
	canaryPass  = "pw-r8k2q-secret"
)

func catcher(t *testing.T, opts mailcatch.Options) *mailcatch.Server {
	t.Helper()
	s, err := mailcatch.Start(opts)
	if err != nil {
		t.Fatalf("mailcatch.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("mailcatch Close: %v", err)
		}
	})
	return s
}

// configFor points a config at the catcher, trusting its certificate.
func configFor(t testing.TB, s *mailcatch.Server) SMTPConfig {
	t.Helper()
	host, p, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return SMTPConfig{
		Host: host, Port: port,
		From:       "Tidings <notices@tidings.example>",
		RequireTLS: true,
		RootCAs:    s.CertPool(),
		Timeout:    5 * time.Second,
	}
}

func mustChannel(t *testing.T, cfg SMTPConfig) *EmailChannel {
	t.Helper()
	c, err := NewEmailChannel(cfg)
	if err != nil {
		t.Fatalf("NewEmailChannel: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func eobEmail(t testing.TB) Email {
	t.Helper()
	e, err := RenderEOBEmail(EOBNotice{
		PayerName: canaryPayer, ServiceDate: "2024-03-05", ProviderName: "Dr. Ada Lovelace",
		PatientShare: "$1,234.50", PortalURL: "https://portal.example.org/eob/view?n=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8&lang=en",
	}, "en")
	if err != nil {
		t.Fatal(err)
	}
	e.To = canaryRcpt
	return e
}

func sendCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// assertSafeError checks that err names no recipient, secret or content.
func assertSafeError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, leak := range []string{canaryLocal, canaryPayer, canaryPass, "1,234.50", "portal.example.org"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error string contains %q: %s", leak, err)
		}
	}
}

// decoded is a received message as a mail reader would show it.
type decoded struct {
	header netmail.Header
	text   string
	html   string
}

func decodeMessage(t *testing.T, raw []byte) decoded {
	t.Helper()
	m, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	d := decoded{header: m.Header}
	var walk func(contentType, encoding string, body io.Reader)
	walk = func(contentType, encoding string, body io.Reader) {
		mt, params, err := mime.ParseMediaType(contentType)
		if err != nil {
			t.Fatalf("content type %q: %v", contentType, err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			r := multipart.NewReader(body, params["boundary"])
			for {
				p, err := r.NextRawPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("multipart: %v", err)
				}
				walk(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
			}
		}
		if strings.EqualFold(encoding, "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		switch mt {
		case "text/plain":
			d.text = string(b)
		case "text/html":
			d.html = string(b)
		}
	}
	walk(m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), m.Body)
	return d
}

func TestSendOverSTARTTLS(t *testing.T) {
	dir := t.TempDir()
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: dir})
	c := mustChannel(t, configFor(t, s))
	if sec := c.Security(); !sec.TLSEnforced || sec.MessageEncrypted {
		t.Errorf("Security() = %+v, want TLS enforced, not encrypted", sec)
	}

	r, err := c.Send(sendCtx(t), eobEmail(t))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !r.TLS {
		t.Error("Receipt.TLS = false")
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("catcher has %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if !m.TLS {
		t.Error("catcher saw DATA outside TLS")
	}
	if m.From != "notices@tidings.example" || len(m.To) != 1 || m.To[0] != canaryRcpt {
		t.Errorf("envelope = %q → %q", m.From, m.To)
	}

	// Read the .eml the way a person's mail program would.
	raw, err := os.ReadFile(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	d := decodeMessage(t, raw)
	subject, err := new(mime.WordDecoder).DecodeHeader(d.header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	if subject != "You have a new Explanation of Benefits" {
		t.Errorf("Subject = %q", subject)
	}
	if got := d.header.Get("Message-Id"); got == "" || got != r.MessageID {
		t.Errorf("Message-ID header %q, receipt %q", got, r.MessageID)
	}
	if !strings.HasSuffix(r.MessageID, "@tidings.example>") {
		t.Errorf("generated Message-ID %q does not use the From domain", r.MessageID)
	}
	const link = "https://portal.example.org/eob/view?n=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8&lang=en"
	for _, want := range []string{"Your share: $1,234.50", link, canaryPayer} {
		if !strings.Contains(d.text, want) {
			t.Errorf("text part lacks %q:\n%s", want, d.text)
		}
	}
	for _, want := range []string{"$1,234.50", `href="https://portal.example.org/eob/view?n=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8&amp;lang=en"`} {
		if !strings.Contains(d.html, want) {
			t.Errorf("html part lacks %q:\n%s", want, d.html)
		}
	}
	for _, h := range []string{"User-Agent", "X-Mailer"} {
		if v := d.header.Get(h); v != "" {
			t.Errorf("%s header %q sent", h, v)
		}
	}
}

func TestSendRequireTLSWithoutSTARTTLSFailsClosed(t *testing.T) {
	s := catcher(t, mailcatch.Options{})
	c := mustChannel(t, configFor(t, s))
	_, err := c.Send(sendCtx(t), eobEmail(t))
	if !errors.Is(err, ErrNoTLS) {
		t.Fatalf("Send: %v, want ErrNoTLS", err)
	}
	if errors.Is(err, ErrTemporary) || errors.Is(err, ErrRejected) {
		t.Errorf("error has more than one kind: %v", err)
	}
	var de *DeliveryError
	if !errors.As(err, &de) || de.Server != s.Addr() || de.Stage != "starttls" {
		t.Errorf("DeliveryError = %+v", de)
	}
	assertSafeError(t, err)
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages; must be none", n)
	}
}

func TestSendOpportunisticWithoutSTARTTLS(t *testing.T) {
	s := catcher(t, mailcatch.Options{})
	cfg := configFor(t, s)
	cfg.RequireTLS = false
	c := mustChannel(t, cfg)
	if c.Security().TLSEnforced {
		t.Error("Security().TLSEnforced = true with RequireTLS=false")
	}
	r, err := c.Send(sendCtx(t), eobEmail(t))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r.TLS {
		t.Error("Receipt.TLS = true on a plaintext session")
	}
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].TLS {
		t.Fatalf("catcher messages = %d (TLS %v), want 1 plaintext", len(msgs), len(msgs) == 1 && msgs[0].TLS)
	}
}

func TestSendOpportunisticUsesSTARTTLSWhenOffered(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	cfg := configFor(t, s)
	cfg.RequireTLS = false
	r, err := mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if msgs := s.Messages(); !r.TLS || len(msgs) != 1 || !msgs[0].TLS {
		t.Errorf("receipt TLS %v, catcher %+v", r.TLS, msgs)
	}
}

func TestSendUntrustedCertificate(t *testing.T) {
	for _, require := range []bool{true, false} {
		t.Run("RequireTLS="+strconv.FormatBool(require), func(t *testing.T) {
			s := catcher(t, mailcatch.Options{STARTTLS: true})
			cfg := configFor(t, s)
			cfg.RootCAs = nil // system roots do not trust the catcher
			cfg.RequireTLS = require
			_, err := mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t))
			if !errors.Is(err, ErrNoTLS) {
				t.Fatalf("Send: %v, want ErrNoTLS", err)
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error does not say the certificate is the problem: %v", err)
			}
			assertSafeError(t, err)
			if n := len(s.Messages()); n != 0 {
				t.Fatalf("catcher received %d messages; must be none", n)
			}
		})
	}
}

func TestSendHostnameMismatch(t *testing.T) {
	// The catcher's certificate names 127.0.0.1, ::1 and localhost only; a
	// catcher on another loopback address presents it for the wrong name.
	s, err := mailcatch.Start(mailcatch.Options{Addr: "127.0.0.2:0", STARTTLS: true})
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 here: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	_, err = mustChannel(t, configFor(t, s)).Send(sendCtx(t), eobEmail(t))
	if !errors.Is(err, ErrNoTLS) {
		t.Fatalf("Send: %v, want ErrNoTLS", err)
	}
	assertSafeError(t, err)
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages", n)
	}
}

func TestSendImplicitTLS(t *testing.T) {
	s := catcher(t, mailcatch.Options{ImplicitTLS: true})
	cfg := configFor(t, s)
	cfg.RequireTLS = false // ImplicitTLS enforces TLS by itself
	cfg.ImplicitTLS = true
	c := mustChannel(t, cfg)
	if !c.Security().TLSEnforced {
		t.Error("Security().TLSEnforced = false with ImplicitTLS")
	}
	r, err := c.Send(sendCtx(t), eobEmail(t))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if msgs := s.Messages(); !r.TLS || len(msgs) != 1 || !msgs[0].TLS {
		t.Errorf("receipt TLS %v, catcher %d messages", r.TLS, len(msgs))
	}
}

func TestSendImplicitTLSToPlaintextServer(t *testing.T) {
	s := catcher(t, mailcatch.Options{})
	cfg := configFor(t, s)
	cfg.ImplicitTLS = true
	_, err := mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t))
	if !errors.Is(err, ErrNoTLS) {
		t.Fatalf("Send: %v, want ErrNoTLS", err)
	}
	assertSafeError(t, err)
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages", n)
	}
}

// A refused recipient fails that Send only: the session is reset and
// carries the next message.
func TestSendServerRejectsOrDefers(t *testing.T) {
	tests := []struct {
		name     string
		reply    mailcatch.Reply
		kind     error
		code     int
		enhanced string
		result   string // in the metrics
	}{
		{"permanent", mailcatch.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}}, ErrRejected, 550, "5.1.1", "rejected"},
		{"temporary", mailcatch.Reply{Code: 451, Enhanced: [3]int{4, 7, 1}}, ErrTemporary, 451, "4.7.1", "temporary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := catcher(t, mailcatch.Options{STARTTLS: true, RejectRcpt: func(rcpt string) *mailcatch.Reply {
				if rcpt != canaryRcpt {
					return nil
				}
				r := tt.reply
				r.Text = "<" + rcpt + ">: Recipient address rejected" // real servers echo the address
				return &r
			}})
			cfg := configFor(t, s)
			cfg.PoolSize = 1
			cfg.Metrics = metrics.New()
			c := mustChannel(t, cfg)
			accepted := eobEmail(t)
			accepted.To = "someone.else@example.net"
			if _, err := c.Send(sendCtx(t), accepted); err != nil {
				t.Fatalf("Send to an accepted recipient: %v", err)
			}

			_, err := c.Send(sendCtx(t), eobEmail(t))
			if !errors.Is(err, tt.kind) {
				t.Fatalf("Send: %v, want %v", err, tt.kind)
			}
			var de *DeliveryError
			if !errors.As(err, &de) {
				t.Fatalf("not a *DeliveryError: %T", err)
			}
			if de.Code != tt.code || de.EnhancedCode != tt.enhanced || de.Stage != "rcpt to" {
				t.Errorf("DeliveryError = %+v", de)
			}
			if !strings.Contains(err.Error(), s.Addr()) || !strings.Contains(err.Error(), strconv.Itoa(tt.code)) {
				t.Errorf("error does not name server and code: %v", err)
			}
			assertSafeError(t, err)

			if _, err := c.Send(sendCtx(t), accepted); err != nil {
				t.Fatalf("Send after the refusal: %v", err)
			}
			msgs := s.Messages()
			if len(msgs) != 2 || msgs[1].Conn != 1 || s.Connections() != 1 {
				t.Errorf("%d messages, %d connections: want 2 over the one session, reset and reused", len(msgs), s.Connections())
			}
			e := metricstest.Of(t, cfg.Metrics)
			if sent, refused, timed := e.Get(t, "tidings_smtp_sends_total", "result", "sent"),
				e.Get(t, "tidings_smtp_sends_total", "result", tt.result), e.Get(t, "tidings_smtp_send_seconds"); sent != 2 || refused != 1 || timed != 3 {
				t.Errorf("smtp metrics: %v sent, %v %s, %v timed; want 2, 1, 3", sent, refused, tt.result, timed)
			}
		})
	}
}

func TestSendConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	c := mustChannel(t, SMTPConfig{Host: "127.0.0.1", Port: addr.Port, From: "n@tidings.example", RequireTLS: true, Timeout: 2 * time.Second})
	_, err = c.Send(sendCtx(t), eobEmail(t))
	if !errors.Is(err, ErrTemporary) {
		t.Fatalf("Send: %v, want ErrTemporary", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("network cause not reachable with errors.As: %v", err)
	}
	assertSafeError(t, err)
}

func TestSendCancelledContext(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := mustChannel(t, configFor(t, s)).Send(ctx, eobEmail(t))
	if !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v, want ErrTemporary and context.Canceled", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages", n)
	}
}

func TestSendAuth(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true, Users: map[string]string{"tidings": canaryPass}})
	cfg := configFor(t, s)
	cfg.Username, cfg.Password = "tidings", canaryPass
	if _, err := mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t)); err != nil {
		t.Fatalf("Send with good credentials: %v", err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].User != "tidings" {
		t.Fatalf("catcher messages: %+v", msgs)
	}

	cfg.Password = canaryPass + "-wrong"
	_, err := mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t))
	var de *DeliveryError
	if !errors.Is(err, ErrRejected) || !errors.As(err, &de) || de.Stage != "auth" || de.Code != 535 {
		t.Fatalf("Send with a wrong password: %v", err)
	}
	assertSafeError(t, err)

	// Without credentials the server refuses MAIL FROM: a permanent error.
	cfg.Username, cfg.Password = "", ""
	_, err = mustChannel(t, cfg).Send(sendCtx(t), eobEmail(t))
	if !errors.Is(err, ErrRejected) || !errors.As(err, &de) || de.Stage != "mail from" {
		t.Fatalf("Send without credentials: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("catcher has %d messages, want still 1", n)
	}
}

func TestSendInvalidEmail(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	c := mustChannel(t, configFor(t, s))
	good := eobEmail(t)
	tests := map[string]func(e *Email){
		"bad recipient":     func(e *Email) { e.To = "canary.r8k2q at example.net" },
		"two recipients":    func(e *Email) { e.To = canaryRcpt + ", other@example.net" },
		"no body":           func(e *Email) { e.Text, e.HTML = "", "" },
		"subject injection": func(e *Email) { e.Subject = "hi\r\nBcc: x@example.com" },
		"bad message id":    func(e *Email) { e.MessageID = "<a b@c>" },
		"message id crlf":   func(e *Email) { e.MessageID = "a@b\r\nBcc: x@example.com" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			e := good
			mutate(&e)
			_, err := c.Send(sendCtx(t), e)
			if !errors.Is(err, ErrInvalidEmail) {
				t.Fatalf("Send: %v, want ErrInvalidEmail", err)
			}
			assertSafeError(t, err)
		})
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages", n)
	}
}

func TestSendGivenMessageIDAndTextOnly(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	e := eobEmail(t)
	e.HTML = ""
	e.MessageID = "<notice-42@tidings.example>"
	r, err := mustChannel(t, configFor(t, s)).Send(sendCtx(t), e)
	if err != nil {
		t.Fatal(err)
	}
	if r.MessageID != "<notice-42@tidings.example>" {
		t.Errorf("Receipt.MessageID = %q", r.MessageID)
	}
	d := decodeMessage(t, s.Messages()[0].Data)
	if got := d.header.Get("Message-Id"); got != "<notice-42@tidings.example>" {
		t.Errorf("Message-ID header = %q", got)
	}
	if d.html != "" || !strings.Contains(d.text, "Your share: $1,234.50") {
		t.Errorf("text-only message: text %q html %q", d.text, d.html)
	}
}

func TestNewEmailChannelValidates(t *testing.T) {
	good := SMTPConfig{Host: "smtp.example.org", From: "Tidings <n@tidings.example>", RequireTLS: true}
	c, err := NewEmailChannel(good)
	if err != nil {
		t.Fatalf("good config: %v", err)
	}
	if c.cfg.Port != 587 || c.cfg.Timeout != DefaultSMTPTimeout || c.cfg.PoolSize != 4 ||
		c.cfg.IdleTimeout != 30*time.Second || c.cfg.MaxMessagesPerSession != 100 {
		t.Errorf("defaults: port %d timeout %v pool %d idle %v messages/session %d",
			c.cfg.Port, c.cfg.Timeout, c.cfg.PoolSize, c.cfg.IdleTimeout, c.cfg.MaxMessagesPerSession)
	}
	implicit := good
	implicit.ImplicitTLS = true
	if c, err := NewEmailChannel(implicit); err != nil || c.cfg.Port != 465 {
		t.Errorf("implicit TLS default port: %v %+v", err, c)
	}

	tests := []struct {
		name   string
		mutate func(*SMTPConfig)
		want   []string
	}{
		{"no host", func(c *SMTPConfig) { c.Host = "" }, []string{"host is empty"}},
		{"url as host", func(c *SMTPConfig) { c.Host = "smtp://x.example" }, []string{"host is not"}},
		{"host with port", func(c *SMTPConfig) { c.Host = "x.example:25" }, []string{"host is not"}},
		{"port", func(c *SMTPConfig) { c.Port = 70000 }, []string{"port"}},
		{"from", func(c *SMTPConfig) { c.From = "not an address" }, []string{"from"}},
		{"half credentials", func(c *SMTPConfig) { c.Username = "u" }, []string{"username and password must be set together"}},
		{"credentials without TLS", func(c *SMTPConfig) {
			c.Username, c.Password, c.RequireTLS = "u", canaryPass, false
		}, []string{"need RequireTLS"}},
		{"negative timeout", func(c *SMTPConfig) { c.Timeout = -time.Second }, []string{"timeout"}},
		{"negative pool settings", func(c *SMTPConfig) {
			c.PoolSize, c.IdleTimeout, c.MaxMessagesPerSession = -1, -time.Second, -1
		}, []string{"pool size", "idle timeout", "messages per session"}},
		{"everything at once", func(c *SMTPConfig) { c.Host, c.Port, c.From = "", -1, "" },
			[]string{"host is empty", "port", "from"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			_, err := NewEmailChannel(cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			assertSafeError(t, err)
		})
	}
}

func TestSMTPConfigLogValueHidesPassword(t *testing.T) {
	cfg := SMTPConfig{Host: "smtp.example.org", Username: "tidings", Password: canaryPass}
	if v := cfg.LogValue().String(); strings.Contains(v, canaryPass) {
		t.Errorf("LogValue shows the password: %s", v)
	}
}

// TestSendReplyLostAfterDataIsUnknown plays a server that takes the whole
// message and whose answer never reaches the client: it hangs up, or it
// stays silent until the Send's deadline. Either way the message may have
// been queued, so the outcome is unknown, never temporary (a retry would
// deliver it twice).
func TestSendReplyLostAfterDataIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hangUp  func(release <-chan struct{}) func([]string) bool
		timeout time.Duration
		cause   error
	}{
		{name: "connection dropped", timeout: 10 * time.Second,
			hangUp: func(<-chan struct{}) func([]string) bool { return func([]string) bool { return true } }},
		{name: "no reply before the deadline", timeout: 500 * time.Millisecond, cause: context.DeadlineExceeded,
			hangUp: func(release <-chan struct{}) func([]string) bool {
				return func([]string) bool { <-release; return true }
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			s := catcher(t, mailcatch.Options{STARTTLS: true, HangUpAfterData: tc.hangUp(release)})
			defer close(release) // before the catcher closes (cleanups run after)
			c := mustChannel(t, configFor(t, s))
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			_, err := c.Send(ctx, eobEmail(t))
			var de *DeliveryError
			if !errors.Is(err, ErrUnknownOutcome) || !errors.As(err, &de) || de.Stage != "data" {
				t.Fatalf("Send: %v, want ErrUnknownOutcome at data", err)
			}
			if errors.Is(err, ErrTemporary) || errors.Is(err, ErrRejected) {
				t.Errorf("Send: %v is also temporary or rejected; it must be unknown only", err)
			}
			if tc.cause != nil && !errors.Is(err, tc.cause) {
				t.Errorf("Send: %v, want the cause %v reachable", err, tc.cause)
			}
			assertSafeError(t, err)
			if n := len(s.Messages()); n != 1 {
				t.Errorf("catcher kept %d messages, want the one it never confirmed", n)
			}
		})
	}
}
