package notify

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mail "github.com/wneessen/go-mail"
	mailsmtp "github.com/wneessen/go-mail/smtp"

	"github.com/tidings-health/tidings/metrics"
)

// Defaults for the zero values of SMTPConfig.
const (
	DefaultSMTPTimeout        = 15 * time.Second
	DefaultSMTPPoolSize       = 4
	DefaultSMTPIdleTimeout    = 30 * time.Second
	DefaultMessagesPerSession = 100
)

// quitTimeout bounds the QUIT that ends a pooled session: the message is
// already sent, so there is no point waiting long for the goodbye.
const quitTimeout = 2 * time.Second

// Security is what a channel guarantees about a message in transit; the
// policy sees it.
type Security struct {
	TLSEnforced      bool // the channel never sends without TLS to the server
	MessageEncrypted bool // the message itself is end-to-end encrypted (S/MIME, OpenPGP)
}

// Receipt is what a successful Send reports.
type Receipt struct {
	MessageID string // the Message-ID header sent, with angle brackets
	TLS       bool   // the session was under TLS
}

// SMTPConfig configures the email channel.
type SMTPConfig struct {
	Host string
	// Port defaults to 587 (STARTTLS) or 465 (ImplicitTLS).
	Port int
	// Username and Password enable AUTH (SCRAM-SHA-256, PLAIN or LOGIN,
	// whichever the server offers first in that order); both or neither,
	// and only with RequireTLS or ImplicitTLS.
	Username, Password string
	// From is the envelope and header sender, e.g.
	// "Tidings <notices@example.org>".
	From string
	// RequireTLS makes STARTTLS mandatory (go-mail TLSMandatory): no TLS,
	// no send. When false, STARTTLS is used when offered and mail may go in
	// plaintext (Security().TLSEnforced is then false).
	RequireTLS bool
	// ImplicitTLS speaks TLS from the first byte (SMTPS, port 465) instead
	// of STARTTLS. It enforces TLS whatever RequireTLS says.
	ImplicitTLS bool
	// RootCAs verifies the server certificate; nil means the system roots.
	// Verification is never skipped.
	RootCAs *x509.CertPool
	// Timeout bounds connecting and each step of the session; default 15s.
	Timeout time.Duration
	// PoolSize is how many SMTP sessions the channel keeps open at most, and
	// so how many messages it sends at once; more Sends wait for a session.
	// Default 4. The worker sizes it to its concurrency
	// (TIDINGS_SMTP_POOL_SIZE overrides that), so no task waits for another.
	PoolSize int
	// IdleTimeout closes a session that has waited this long for a message
	// (servers hang up on idle clients after a minute or a few); default 30s.
	IdleTimeout time.Duration
	// MaxMessagesPerSession ends a session with QUIT after this many
	// messages, as relays limit them per connection; default 100.
	MaxMessagesPerSession int
	// DKIM are the keys that sign mail, by tenant and header From domain.
	DKIM []DKIMKey
	// Signers sign, by tenant, the messages encrypted for a recipient's
	// S/MIME certificate or OpenPGP key (encrypted.go).
	Signers []MessageSigner
	// Metrics counts each Send by result, with its duration; nil counts nothing.
	Metrics *metrics.Metrics
}

// LogValue logs the config without its secrets.
func (c SMTPConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.Bool("require_tls", c.RequireTLS),
		slog.Bool("implicit_tls", c.ImplicitTLS),
		slog.Bool("auth", c.Username != ""),
		slog.Bool("custom_roots", c.RootCAs != nil),
		slog.Int("pool_size", c.PoolSize),
	)
}

// EmailChannel sends email through one SMTP server. It is safe for
// concurrent use. It keeps up to PoolSize sessions open and sends each
// message over an idle one; Close ends them.
type EmailChannel struct {
	cfg        SMTPConfig
	addr       string // host:port, for errors
	fromDomain string // for generated Message-IDs
	dkim       dkimKeys
	signers    messageSigners
	pool       *sessionPool
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)

// NewEmailChannel validates cfg, fills in defaults and returns a channel.
// Every problem is reported at once, wrapped in ErrInvalidConfig.
func NewEmailChannel(cfg SMTPConfig) (*EmailChannel, error) {
	var problems []string
	bad := func(problem string) { problems = append(problems, problem) }

	cfg.Host = strings.TrimSpace(cfg.Host)
	switch {
	case cfg.Host == "":
		bad("host is empty")
	case net.ParseIP(cfg.Host) == nil && (len(cfg.Host) > 253 || !hostnameRE.MatchString(cfg.Host)):
		bad("host is not a host name or IP address")
	}
	if cfg.Port == 0 {
		cfg.Port = mail.DefaultPortTLS
		if cfg.ImplicitTLS {
			cfg.Port = mail.DefaultPortSSL
		}
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		bad("port is out of range 1-65535")
	}
	var fromDomain string
	if addr, err := netmail.ParseAddress(cfg.From); err != nil {
		bad("from is not an email address")
	} else {
		fromDomain = addr.Address[strings.LastIndexByte(addr.Address, '@')+1:]
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		bad("username and password must be set together")
	}
	if cfg.Username != "" && !cfg.RequireTLS && !cfg.ImplicitTLS {
		bad("username and password need RequireTLS or ImplicitTLS")
	}
	orDefault(&cfg.Timeout, DefaultSMTPTimeout, "timeout", bad)
	orDefault(&cfg.PoolSize, DefaultSMTPPoolSize, "pool size", bad)
	orDefault(&cfg.IdleTimeout, DefaultSMTPIdleTimeout, "idle timeout", bad)
	orDefault(&cfg.MaxMessagesPerSession, DefaultMessagesPerSession, "messages per session", bad)
	dkim := newDKIMKeys(cfg.DKIM, bad)
	signers := newMessageSigners(cfg.Signers, time.Now(), bad)
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
	}
	return &EmailChannel{
		cfg:        cfg,
		addr:       net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		fromDomain: fromDomain,
		dkim:       dkim,
		signers:    signers,
		pool:       newSessionPool(cfg.PoolSize, cfg.MaxMessagesPerSession, cfg.IdleTimeout, min(cfg.Timeout, quitTimeout)),
	}, nil
}

// orDefault reports a negative setting and fills in a zero one.
func orDefault[T int | time.Duration](v *T, def T, name string, bad func(string)) {
	if *v < 0 {
		bad(name + " is negative")
	}
	if *v == 0 {
		*v = def
	}
}

// Security reports what the channel guarantees for every message;
// SecurityFor adds message-level encryption for a recipient's own key.
func (c *EmailChannel) Security() Security {
	return Security{TLSEnforced: c.cfg.RequireTLS || c.cfg.ImplicitTLS}
}

// Send delivers one message over a session from the pool: an idle one, a
// new one while fewer than PoolSize are open, or the next one to come back
// (waiting no longer than ctx allows).
//
// Errors are *DeliveryError values wrapping ErrNoTLS (TLS required but not
// available or the handshake failed: nothing was sent), ErrRejected (a
// permanent 5xx answer), ErrTemporary (a 4xx answer, or a network failure,
// a timeout, ctx ending or the channel closed before the message was sent
// in full: retry) or ErrUnknownOutcome (the message was sent in full and
// the server's answer to it never came: do not retry), or ErrInvalidEmail
// before anything is sent. Error strings name the server, the stage and
// the SMTP code only, never the recipient or the content. A failure after
// the server accepted the message (at RSET) is not an error: retrying
// would deliver it twice.
//
// A pooled session that the server closed while it sat idle fails at MAIL
// FROM, before any of the message went out; Send then tries once more on a
// new session. Nothing is tried again once a recipient has been given.
func (c *EmailChannel) Send(ctx context.Context, e Email) (Receipt, error) {
	start := time.Now()
	r, err := c.send(ctx, e)
	c.cfg.Metrics.SMTPSend(smtpResult(err), time.Since(start))
	return r, err
}

// smtpResult is the metrics' name for how a Send ended.
func smtpResult(err error) metrics.SMTPResult {
	switch {
	case err == nil:
		return metrics.SMTPSent
	case errors.Is(err, ErrUnknownOutcome):
		return metrics.SMTPUnknown
	case errors.Is(err, ErrTemporary):
		return metrics.SMTPTemporary
	case errors.Is(err, ErrRejected):
		return metrics.SMTPRejected
	case errors.Is(err, ErrNoTLS):
		return metrics.SMTPNoTLS
	}
	return metrics.SMTPError
}

func (c *EmailChannel) send(ctx context.Context, e Email) (Receipt, error) {
	msg, id, err := c.buildMsg(e)
	if err != nil {
		return Receipt{}, err
	}
	if err := ctx.Err(); err != nil {
		return Receipt{}, c.fail("connect", "cancelled before connecting", ErrTemporary, 0, "", err)
	}
	s, err := c.session(ctx)
	if err != nil {
		return Receipt{}, err
	}
	after, err := c.transact(ctx, s, msg)
	if after == sessionWasStale {
		s.trace.close()
		if s, err = c.dialInto(ctx); err != nil { // the stale session's slot
			return Receipt{}, err
		}
		after, err = c.transact(ctx, s, msg)
	}
	underTLS := s.tls // s may serve another Send once back
	if after == sessionReusable {
		c.pool.put(s)
	} else {
		c.pool.discard(s)
	}
	if err != nil && !msg.IsDelivered() {
		return Receipt{}, c.sendError(ctx, err)
	}
	return Receipt{MessageID: id, TLS: underTLS}, nil
}

// Close ends every open session with QUIT. A Send still running finishes
// on its session, which is then closed; later Sends fail (ErrTemporary).
func (c *EmailChannel) Close() error {
	c.pool.close()
	return nil
}

// session takes a session from the pool or dials one into a free slot.
func (c *EmailChannel) session(ctx context.Context) (*smtpSession, error) {
	s, err := c.pool.get(ctx)
	switch {
	case errors.Is(err, errPoolClosed):
		return nil, c.fail("connect", "channel closed", ErrTemporary, 0, "", nil)
	case err != nil:
		return nil, c.fail("connect", "cancelled while waiting for a session", ErrTemporary, 0, "", err)
	case s != nil:
		return s, nil
	}
	return c.dialInto(ctx)
}

// dialInto dials a session into a slot the caller holds; the slot is
// given back when that fails.
func (c *EmailChannel) dialInto(ctx context.Context) (*smtpSession, error) {
	s, err := c.dial(ctx)
	if err != nil {
		c.pool.discard(nil)
		return nil, err
	}
	return s, nil
}

// dial opens a session: connect, greet, TLS as configured, AUTH.
func (c *EmailChannel) dial(ctx context.Context) (*smtpSession, error) {
	tr := &sessionTrace{}
	stop := context.AfterFunc(ctx, tr.close) // unblocks a dial stuck in I/O
	fail := func(err error) (*smtpSession, error) {
		stop()
		tr.close() // go-mail leaves the connection open on some errors
		return nil, err
	}
	client, err := mail.NewClient(c.cfg.Host, c.clientOptions(tr)...)
	if err != nil {
		// Only a bad option can fail here, and the config was validated.
		return fail(c.fail("connect", "smtp client setup failed", ErrRejected, 0, "", nil))
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fail(c.dialError(ctx, tr, err))
	}
	state, isTLS := sc.TLSConnectionState()
	underTLS := isTLS && state.HandshakeComplete
	if c.Security().TLSEnforced && !underTLS {
		return fail(c.fail("starttls", "session is not under TLS", ErrNoTLS, 0, "", nil))
	}
	if c.cfg.Username != "" {
		if err := c.auth(sc); err != nil {
			return fail(c.authError(ctx, err))
		}
	}
	if !stop() {
		tr.close()
		return nil, c.fail("connect", "cancelled", ErrTemporary, 0, "", ctx.Err())
	}
	return &smtpSession{client: client, smtp: sc, trace: tr, tls: underTLS}, nil
}

// What a mail transaction left its session fit for.
type sessionAfter int

const (
	sessionReusable sessionAfter = iota // back to the pool
	sessionBroken                       // close it
	// sessionWasStale: a pooled session was found closed by the server
	// at MAIL FROM; none of the message was sent, and it may go on
	// another session.
	sessionWasStale
)

// transact runs one mail transaction (MAIL, RCPT, DATA, then RSET) on s.
func (c *EmailChannel) transact(ctx context.Context, s *smtpSession, msg *mail.Msg) (sessionAfter, error) {
	stop := context.AfterFunc(ctx, s.trace.close) // unblocks a session stuck in I/O
	reused := s.sent > 0
	s.sent++
	err := s.client.SendWithSMTPClient(s.smtp, msg)
	after := sessionBroken
	var se *mail.SendError
	switch {
	case err == nil:
		after = sessionReusable
	case msg.IsDelivered(): // the RSET after the message failed
	case !errors.As(err, &se):
	case se.Reason == mail.ErrGetSender || se.Reason == mail.ErrGetRcpts || se.Reason == mail.ErrNoUnencoded:
		after = sessionReusable // refused before anything was sent
	case reused && closedWhileIdle(se):
		after = sessionWasStale
	case se.ErrorCode() >= 400 && c.reset(s) == nil:
		// The server refused this message and the session is clean again.
		after = sessionReusable
	}
	if !stop() {
		// ctx ended and closed the connection under the transaction.
		after = sessionBroken
	}
	return after, err
}

// closedWhileIdle reports whether a pooled session's first command found
// it already closed by the server: the connection failed, or the server
// answered 421 (closing the channel), as servers do to clients that idled
// past their timeout.
func closedWhileIdle(se *mail.SendError) bool {
	switch se.Reason {
	case mail.ErrConnCheck:
		return true
	case mail.ErrSMTPMailFrom:
		code := se.ErrorCode()
		return code == 0 || code == 421
	}
	return false
}

// reset ends a refused transaction with RSET so the session can carry the
// next message. go-mail sends one already after MAIL or RCPT failed but
// keeps its outcome to itself; a second RSET is cheap and says whether
// the session is clean.
func (c *EmailChannel) reset(s *smtpSession) error {
	if err := s.smtp.UpdateDeadline(c.cfg.Timeout); err != nil {
		return err
	}
	return s.smtp.Reset()
}

func (c *EmailChannel) clientOptions(tr *sessionTrace) []mail.Option {
	tlsConfig := &tls.Config{
		ServerName: c.cfg.Host,
		RootCAs:    c.cfg.RootCAs,
		MinVersion: tls.VersionTLS12,
	}
	opts := []mail.Option{
		mail.WithPort(c.cfg.Port),
		mail.WithTimeout(c.cfg.Timeout),
		mail.WithTLSConfig(tlsConfig),
		mail.WithDialContextFunc(func(dialCtx context.Context, network, addr string) (net.Conn, error) {
			return tr.dial(dialCtx, network, addr, c.cfg.Timeout, c.cfg.ImplicitTLS, tlsConfig)
		}),
		// A pooled session that died while idle shows at MAIL FROM, which
		// Send handles; a NOOP before every message would cost a round trip.
		mail.WithoutNoop(),
	}
	switch {
	case c.cfg.ImplicitTLS:
		// The dial function already speaks TLS; go-mail must not STARTTLS.
		opts = append(opts, mail.WithSSL(), mail.WithTLSPolicy(mail.NoTLS))
	case c.cfg.RequireTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	}
	return opts
}

var messageIDRE = regexp.MustCompile(`^[!#-'*+\-/-9=?A-Z^-~.]+@[!#-'*+\-/-9=?A-Z^-~.\[\]]+$`)

// NewMessageID is a fresh Message-ID, with angle brackets: 128 random bits
// at the sender's domain, derived from nothing about the notice or patient.
func (c *EmailChannel) NewMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "<" + hex.EncodeToString(b[:]) + "@" + c.fromDomain + ">"
}

// buildMsg turns e into a go-mail message and returns its Message-ID.
func (c *EmailChannel) buildMsg(e Email) (*mail.Msg, string, error) {
	if e.Text == "" && e.HTML == "" {
		return nil, "", fmt.Errorf("%w: no body", ErrInvalidEmail)
	}
	if strings.ContainsAny(e.Subject, "\r\n") {
		return nil, "", fmt.Errorf("%w: subject has a line break", ErrInvalidEmail)
	}
	m := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := m.From(c.cfg.From); err != nil {
		return nil, "", fmt.Errorf("%w: from is not an email address", ErrInvalidEmail)
	}
	headerFrom := c.cfg.From
	if e.FromName != "" || e.From != "" {
		// A workflow's sender identity; the envelope stays the configured
		// sender (SPF, bounces).
		base, err := netmail.ParseAddress(c.cfg.From)
		if err != nil {
			return nil, "", fmt.Errorf("%w: from is not an email address", ErrInvalidEmail)
		}
		addr, name := base.Address, base.Name
		if e.From != "" {
			addr = e.From
		}
		if e.FromName != "" {
			name = e.FromName
		}
		if strings.ContainsAny(name, "\r\n") {
			return nil, "", fmt.Errorf("%w: sender name has a line break", ErrInvalidEmail)
		}
		if err := m.EnvelopeFrom(base.Address); err != nil {
			return nil, "", fmt.Errorf("%w: from is not an email address", ErrInvalidEmail)
		}
		if err := m.FromFormat(name, addr); err != nil {
			return nil, "", fmt.Errorf("%w: the sender's from is not an email address", ErrInvalidEmail)
		}
		headerFrom = addr
	}
	if err := setListUnsubscribe(m, e.ListUnsubscribe); err != nil {
		return nil, "", err
	}
	if a, err := netmail.ParseAddress(headerFrom); err == nil {
		if s := c.dkim.signer(e.TenantID, a.Address); s != nil {
			if e.ListUnsubscribe != "" {
				s.SignHeaders(unsubscribeSignedHeaders...)
			}
			m.SetDKIM(s)
		}
	}
	if e.ReplyTo != "" {
		if err := m.ReplyTo(e.ReplyTo); err != nil {
			return nil, "", fmt.Errorf("%w: reply-to is not an email address", ErrInvalidEmail)
		}
	}
	// go-mail's error would quote the address: drop it.
	if _, err := netmail.ParseAddress(e.To); err != nil {
		return nil, "", fmt.Errorf("%w: recipient is not an email address", ErrInvalidEmail)
	}
	if err := m.To(e.To); err != nil {
		return nil, "", fmt.Errorf("%w: recipient is not an email address", ErrInvalidEmail)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(e.MessageID), "<"), ">")
	if id == "" {
		id = strings.Trim(c.NewMessageID(), "<>")
	} else if len(id) > 250 || !messageIDRE.MatchString(id) {
		return nil, "", fmt.Errorf("%w: message id is malformed", ErrInvalidEmail)
	}
	m.SetMessageIDWithValue(id)
	m.SetDate()
	m.Subject(e.Subject)
	if e.EncryptFor != nil {
		if err := c.encryptBody(m, e); err != nil {
			return nil, "", err
		}
		return m, m.GetMessageID(), nil
	}
	switch {
	case e.Text != "" && e.HTML != "":
		m.SetBodyString(mail.TypeTextPlain, e.Text)
		m.AddAlternativeString(mail.TypeTextHTML, e.HTML)
	case e.Text != "":
		m.SetBodyString(mail.TypeTextPlain, e.Text)
	default:
		m.SetBodyString(mail.TypeTextHTML, e.HTML)
	}
	return m, m.GetMessageID(), nil
}

// auth authenticates over the (already verified) TLS session with the
// first mechanism, in our order of preference, that the server offers.
func (c *EmailChannel) auth(sc *mailsmtp.Client) error {
	ok, list := sc.Extension("AUTH")
	if !ok {
		return errNoAuthMechanism
	}
	offered := strings.Fields(strings.ToUpper(list))
	has := func(m string) bool {
		for _, o := range offered {
			if o == m {
				return true
			}
		}
		return false
	}
	var a mailsmtp.Auth
	switch {
	case has("SCRAM-SHA-256"):
		a = mailsmtp.ScramSHA256Auth(c.cfg.Username, c.cfg.Password)
	case has("PLAIN"):
		a = mailsmtp.PlainAuth("", c.cfg.Username, c.cfg.Password, c.cfg.Host, false)
	case has("LOGIN"):
		a = mailsmtp.LoginAuth(c.cfg.Username, c.cfg.Password, c.cfg.Host, false)
	default:
		return errNoAuthMechanism
	}
	return sc.Auth(a)
}

var errNoAuthMechanism = errors.New("no supported AUTH mechanism")

func (c *EmailChannel) fail(stage, reason string, kind error, code int, enhanced string, cause error) *DeliveryError {
	return &DeliveryError{
		Server: c.addr, Stage: stage, Reason: reason, Kind: kind,
		Code: code, EnhancedCode: enhanced, cause: cause,
	}
}

// replyKind maps an SMTP reply code to an error kind.
func replyKind(code int) (reason string, kind error) {
	if code >= 500 {
		return "server refused", ErrRejected
	}
	return "server deferred", ErrTemporary
}

// dialError classifies a failure while connecting, greeting, STARTTLS and
// the TLS handshake.
func (c *EmailChannel) dialError(ctx context.Context, tr *sessionTrace, err error) error {
	var reply *textproto.Error
	isReply := errors.As(err, &reply)
	switch {
	case ctx.Err() != nil:
		return c.fail("connect", "cancelled", ErrTemporary, 0, "", ctx.Err())
	case tr.handshakeFailed.Load():
		return c.fail("tls", "TLS handshake failed", ErrNoTLS, 0, "", transportCause(err))
	case !tr.connected.Load():
		return c.fail("connect", "could not connect", ErrTemporary, 0, "", transportCause(err))
	case tr.startTLSSent.Load() && isReply:
		return c.fail("starttls", "server refused STARTTLS", ErrNoTLS, reply.Code, enhancedCode(reply.Msg), nil)
	case tr.startTLSSent.Load():
		return c.fail("tls", "TLS handshake failed", ErrNoTLS, 0, "", transportCause(err))
	case isReply:
		reason, kind := replyKind(reply.Code)
		return c.fail("greeting", reason, kind, reply.Code, enhancedCode(reply.Msg), nil)
	case isTLSFailure(err):
		return c.fail("tls", "TLS handshake failed", ErrNoTLS, 0, "", transportCause(err))
	case transportCause(err) != nil:
		return c.fail("greeting", "connection failed", ErrTemporary, 0, "", transportCause(err))
	case c.cfg.RequireTLS && !c.cfg.ImplicitTLS:
		// With TLSMandatory, go-mail's only error between EHLO and STARTTLS
		// is "target host does not support STARTTLS".
		return c.fail("starttls", "server does not offer STARTTLS", ErrNoTLS, 0, "", nil)
	default:
		return c.fail("greeting", "session setup failed", ErrTemporary, 0, "", nil)
	}
}

func (c *EmailChannel) authError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return c.fail("auth", "cancelled", ErrTemporary, 0, "", ctx.Err())
	}
	if errors.Is(err, errNoAuthMechanism) {
		return c.fail("auth", "server offers no supported AUTH mechanism", ErrRejected, 0, "", nil)
	}
	var reply *textproto.Error
	if errors.As(err, &reply) {
		_, kind := replyKind(reply.Code)
		return c.fail("auth", "authentication failed", kind, reply.Code, enhancedCode(reply.Msg), nil)
	}
	if cause := transportCause(err); cause != nil {
		return c.fail("auth", "connection failed", ErrTemporary, 0, "", cause)
	}
	return c.fail("auth", "authentication failed", ErrRejected, 0, "", nil)
}

// sendError classifies a failure from MAIL FROM to the end of DATA.
func (c *EmailChannel) sendError(ctx context.Context, err error) error {
	var se *mail.SendError
	if !errors.As(err, &se) {
		if ctx.Err() != nil {
			return c.fail("data", "cancelled", ErrTemporary, 0, "", ctx.Err())
		}
		return c.fail("data", "delivery failed", ErrTemporary, 0, "", transportCause(err))
	}
	stage := sendStage(se.Reason)
	if code := se.ErrorCode(); code >= 400 {
		reason, kind := replyKind(code)
		return c.fail(stage, reason, kind, code, se.EnhancedStatusCode(), nil)
	}
	switch {
	case se.Reason == mail.ErrSMTPDataClose:
		// The final dot went out and no reply came back: the server may
		// have queued the message before the connection broke.
		cause := transportCause(err)
		if ctx.Err() != nil {
			cause = ctx.Err()
		}
		return c.fail(stage, "no reply after the message was sent", ErrUnknownOutcome, 0, "", cause)
	case ctx.Err() != nil:
		return c.fail(stage, "cancelled", ErrTemporary, 0, "", ctx.Err())
	case se.Reason == mail.ErrGetSender || se.Reason == mail.ErrGetRcpts || se.Reason == mail.ErrNoUnencoded:
		return c.fail(stage, "message cannot be sent as built", ErrRejected, 0, "", nil)
	default:
		return c.fail(stage, "connection failed", ErrTemporary, 0, "", transportCause(err))
	}
}

func sendStage(r mail.SendErrReason) string {
	switch r {
	case mail.ErrSMTPMailFrom, mail.ErrGetSender:
		return "mail from"
	case mail.ErrSMTPRcptTo, mail.ErrGetRcpts:
		return "rcpt to"
	case mail.ErrSMTPReset:
		return "reset"
	case mail.ErrConnCheck:
		return "connect"
	default:
		return "data"
	}
}

var enhancedCodeRE = regexp.MustCompile(`^"?([245]\.\d{1,3}\.\d{1,3})\b`)

// enhancedCode takes the RFC 3463 code off the front of a reply text; the
// rest of the text is dropped.
func enhancedCode(msg string) string {
	if m := enhancedCodeRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// sessionTrace watches one SMTP session's connection, so a failure can be
// placed: before connecting, in the TLS handshake, or after.
type sessionTrace struct {
	connected       atomic.Bool
	startTLSSent    atomic.Bool
	handshakeFailed atomic.Bool

	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func (t *sessionTrace) dial(dialCtx context.Context, network, addr string,
	timeout time.Duration, implicitTLS bool, tlsConfig *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(dialCtx, network, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.closed {
		// The Send's ctx ended, and with it dialCtx, which derives from it.
		t.mu.Unlock()
		raw.Close()
		if err := dialCtx.Err(); err != nil {
			return nil, err
		}
		return nil, net.ErrClosed
	}
	t.conn = raw
	t.mu.Unlock()
	t.connected.Store(true)

	watched := &watchedConn{Conn: raw, trace: t}
	if !implicitTLS {
		return watched, nil
	}
	tc := tls.Client(watched, tlsConfig)
	if err := tc.HandshakeContext(dialCtx); err != nil {
		t.handshakeFailed.Store(true)
		return nil, err
	}
	return tc, nil
}

// close closes the connection: when a session ends, when ctx ends under
// it, and after errors go-mail leaves the connection open on.
func (t *sessionTrace) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.conn != nil {
		t.conn.Close()
	}
}

// watchedConn notes when the client sends STARTTLS. After the upgrade it
// only sees TLS records, which never look like a command.
type watchedConn struct {
	net.Conn
	trace *sessionTrace
}

func (w *watchedConn) Write(p []byte) (int, error) {
	if !w.trace.startTLSSent.Load() && len(p) >= 8 && strings.EqualFold(string(p[:8]), "STARTTLS") {
		w.trace.startTLSSent.Store(true)
	}
	return w.Conn.Write(p)
}
