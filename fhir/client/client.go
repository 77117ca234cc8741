package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tidings-health/tidings/metrics"
)

const (
	defaultTimeout      = 15 * time.Second
	defaultMaxRetries   = 3
	defaultMaxBodyBytes = 8 << 20
	defaultMaxPages     = 50
	defaultMaxEntries   = 10000
	maxRedirects        = 5
	// maxErrorBody is how much of an error response is kept to look for an
	// OperationOutcome; it is never put in an error string.
	maxErrorBody = 64 << 10
	userAgent    = "tidings-fhir-client/1"
)

var errTooManyRedirects = fmt.Errorf("%w: too many redirects", ErrInvalidResponse)

// Options configure a Client. Zero values take the documented defaults.
type Options struct {
	// BaseURL is the FHIR server's service base, e.g.
	// https://ehr.example.org/fhir/r4. It must be absolute http(s), without
	// credentials, query or fragment; http only for a loopback host.
	BaseURL string
	// Auth sets the Authorization header; nil sends none. When it is an
	// Invalidator, a 401 renews the credential once and retries.
	Auth Auth
	// HTTP is copied and its CheckRedirect replaced. Default: 15 s timeout.
	HTTP *http.Client
	// MaxRetries after the first try on 5xx (except 501), 429 and network
	// errors, waiting Retry-After (capped at 60 s) or else an exponential
	// backoff with jitter (0.25-0.5 s, 0.5-1 s, 1-2 s, ... up to 20 s).
	// Default 3; negative means none.
	MaxRetries int
	// MaxBodyBytes bounds a response body. Default 8 MiB.
	MaxBodyBytes int64
	// MaxPages bounds the pages one Search follows. Default 50.
	MaxPages int
	// MaxEntries bounds the resources one Search returns. Default 10000.
	MaxEntries int
	// Logger receives retries at Warn level (method, path, status or
	// error kind; no query, no body). Default: discard.
	Logger *slog.Logger
	// DenyPrivateNetworks refuses to connect to loopback, private,
	// link-local and other non-public addresses, IANA special-purpose blocks
	// and IPv6 prefixes that translate to IPv4 (see publicAddr; checked at
	// dial time, after DNS, and not retried), so a registered source cannot
	// point Tidings at internal services.
	// It applies when HTTP is nil.
	DenyPrivateNetworks bool
	// Metrics counts each HTTP request (every retry) by method and result,
	// with its duration; nil counts nothing.
	Metrics *metrics.Metrics
	// Now and Sleep are hooks for tests. Sleep must return early with the
	// context's error when ctx is done.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// LogValue shows the base URL and limits, never credentials.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", o.BaseURL),
		slog.Int("max_retries", o.MaxRetries),
		slog.Int64("max_body_bytes", o.MaxBodyBytes),
	)
}

// Client is a FHIR R4 REST client bound to one server's base URL. It is safe
// for concurrent use.
type Client struct {
	base       *url.URL
	auth       Auth
	hc         *http.Client
	maxRetries int
	maxBody    int64
	maxPages   int
	maxEntries int
	log        *slog.Logger
	metrics    *metrics.Metrics
	now        func() time.Time
	sleep      func(context.Context, time.Duration) error
}

// New checks the options and returns a Client.
func New(o Options) (*Client, error) {
	base, err := parseEndpoint(o.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("fhir/client: BaseURL: %w", err)
	}
	if base.RawQuery != "" || base.ForceQuery {
		return nil, errors.New("fhir/client: BaseURL: must not have a query")
	}
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = ""
	if v, ok := o.Auth.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return nil, err
		}
	}
	c := &Client{
		base:       base,
		auth:       o.Auth,
		maxRetries: o.MaxRetries,
		maxBody:    o.MaxBodyBytes,
		maxPages:   o.MaxPages,
		maxEntries: o.MaxEntries,
		log:        o.Logger,
		metrics:    o.Metrics,
		now:        o.Now,
		sleep:      o.Sleep,
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = defaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.maxBody <= 0 {
		c.maxBody = defaultMaxBodyBytes
	}
	if c.maxPages <= 0 {
		c.maxPages = defaultMaxPages
	}
	if c.maxEntries <= 0 {
		c.maxEntries = defaultMaxEntries
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	hc := http.Client{Timeout: defaultTimeout}
	if o.HTTP != nil {
		hc = *o.HTTP
	} else if o.DenyPrivateNetworks {
		hc = *PublicOnlyHTTPClient()
	}
	hc.CheckRedirect = checkRedirect
	c.hc = &hc
	return c, nil
}

// LogValue shows the base URL only.
func (c *Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.base.String()))
}

// checkRedirect follows a redirect only to the scheme and host of the
// original request.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return errTooManyRedirects
	}
	if !sameOrigin(via[0].URL, req.URL) {
		return ErrRedirectRefused
	}
	return nil
}

// parseEndpoint checks an absolute http(s) URL: no credentials, no
// fragment, and https unless the host is loopback. Messages quote no part of
// the URL.
func parseEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("scheme must be https (or http on loopback)")
	}
	if u.Host == "" || u.Opaque != "" {
		return nil, errors.New("must be an absolute URL with a host")
	}
	if u.User != nil {
		return nil, errors.New("must not carry credentials")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return nil, errors.New("must not have a fragment")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, errors.New("https is required unless the host is loopback")
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// origin is scheme://host:port, lower-case, with the default port made
// explicit so https://h and https://h:443 compare equal.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func sameOrigin(a, b *url.URL) bool { return origin(a) == origin(b) }

// resourceURL is [base]/segs..., each segment already validated.
func (c *Client) resourceURL(segs ...string) *url.URL {
	u := *c.base
	u.Path = c.base.Path + "/" + strings.Join(segs, "/")
	u.RawPath = ""
	return &u
}

// Read fetches [base]/{resourceType}/{id}. A 404 or 410 is ErrGone.
func (c *Client) Read(ctx context.Context, resourceType, id string) (json.RawMessage, error) {
	if !validType(resourceType) || !validID(id) {
		return nil, fmt.Errorf("%w: resource type or id malformed", ErrInvalidReference)
	}
	return c.read(ctx, c.resourceURL(resourceType, id), resourceType)
}

// ReadReference fetches what a FHIR reference names: "Type/id",
// "Type/id/_history/vid", or an absolute URL under the base URL (anything
// else absolute is ErrForeignReference). Contained ("#id"), urn: and
// conditional references are ErrInvalidReference. A 404 or 410 is ErrGone
// (for a version read: that version is not there).
func (c *Client) ReadReference(ctx context.Context, ref string) (json.RawMessage, error) {
	typ, id, vid, err := parseReference(c.base, ref)
	if err != nil {
		return nil, err
	}
	u := c.resourceURL(typ, id)
	if vid != "" {
		u = c.resourceURL(typ, id, "_history", vid)
	}
	return c.read(ctx, u, typ)
}

func (c *Client) read(ctx context.Context, u *url.URL, typ string) (json.RawMessage, error) {
	res, err := c.get(ctx, u)
	if err != nil {
		return nil, err
	}
	switch {
	case res.status == http.StatusOK:
	case res.status == http.StatusNotFound || res.status == http.StatusGone:
		return nil, res.statusError(ErrGone)
	default:
		return nil, res.statusError(nil)
	}
	if err := checkResourceType(res.body, typ); err != nil {
		return nil, &opError{method: http.MethodGet, path: templatePath(u.Path), what: err.Error(), err: err}
	}
	return res.body, nil
}

// Events calls the Subscriptions Backport IG operation
// GET [base]/Subscription/{id}/$events?eventsSinceNumber=from&eventsUntilNumber=to&content=full-resource
// and returns the history Bundle as sent. A server without the operation
// (404, 405, 501, or a 400 whose OperationOutcome says not supported)
// yields ErrUnsupported; callers then fall back to a _lastUpdated Search.
func (c *Client) Events(ctx context.Context, subscriptionID string, from, to int64) (json.RawMessage, error) {
	if !validID(subscriptionID) {
		return nil, fmt.Errorf("%w: subscription id malformed", ErrInvalidReference)
	}
	if from < 0 || to < from {
		return nil, errors.New("fhir/client: $events: need 0 <= from <= to")
	}
	u := c.resourceURL("Subscription", subscriptionID, "$events")
	u.RawQuery = url.Values{
		"eventsSinceNumber": {strconv.FormatInt(from, 10)},
		"eventsUntilNumber": {strconv.FormatInt(to, 10)},
		"content":           {"full-resource"},
	}.Encode()
	res, err := c.get(ctx, u)
	if err != nil {
		return nil, err
	}
	switch res.status {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return nil, res.statusError(ErrUnsupported)
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		if outcomeNotSupported(res.body) {
			return nil, res.statusError(ErrUnsupported)
		}
		return nil, res.statusError(nil)
	default:
		return nil, res.statusError(nil)
	}
	if err := checkResourceType(res.body, "Bundle"); err != nil {
		return nil, &opError{method: http.MethodGet, path: templatePath(u.Path), what: err.Error(), err: err}
	}
	return res.body, nil
}

// response is a finished exchange: a 2xx with a checked JSON body, or any
// other final status with at most maxErrorBody of its body.
type response struct {
	method, path string
	status       int
	body         []byte
}

// statusError builds the error for a non-success status, mapping 401 and
// 403 to ErrUnauthorized unless kind says otherwise.
func (r response) statusError(kind error) error {
	if kind == nil && (r.status == http.StatusUnauthorized || r.status == http.StatusForbidden) {
		kind = ErrUnauthorized
	}
	return &StatusError{Method: r.method, Path: r.path, StatusCode: r.status, kind: kind}
}

// get performs one GET with retries, the 401 renewal and the body checks.
func (c *Client) get(ctx context.Context, u *url.URL) (response, error) {
	return c.send(ctx, http.MethodGet, u, nil)
}

// send performs one request. A GET is retried on 5xx, 429 and network
// errors; a POST (not idempotent: a retry could create twice) only on 429,
// which says the request was not processed.
func (c *Client) send(ctx context.Context, method string, u *url.URL, body []byte) (response, error) {
	path := templatePath(u.Path)
	target := u.String()
	renewed := false
	for retries := 0; ; {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return response{}, &opError{method: method, path: path, what: "cannot build request", err: ErrInvalidReference}
		}
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("User-Agent", userAgent)
		if body != nil {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		if c.auth != nil {
			if err := c.auth.Authorize(ctx, req); err != nil {
				return response{}, fmt.Errorf("fhir/client: %s %s: authorization: %w", method, path, err)
			}
		}
		start := time.Now()
		resp, err := c.hc.Do(req)
		c.metrics.FHIRRequest(method, fhirResult(resp, err), time.Since(start))
		var delay time.Duration
		switch {
		case err != nil:
			terr := transportError(method, path, err)
			if retries >= c.maxRetries || !retryableTransport(ctx, err) || method != http.MethodGet {
				return response{}, terr
			}
			delay = backoff(retries)
			c.log.LogAttrs(ctx, slog.LevelWarn, "fhir request retry",
				slog.String("method", method), slog.String("path", path),
				slog.String("error", terr.Error()), slog.Int("retry", retries+1), slog.Duration("delay", delay))
		case resp.StatusCode == http.StatusUnauthorized && !renewed && isInvalidator(c.auth):
			discard(resp)
			c.auth.(Invalidator).Invalidate(req.Header.Get("Authorization"))
			renewed = true
			c.log.LogAttrs(ctx, slog.LevelInfo, "fhir request unauthorized; renewing token",
				slog.String("method", method), slog.String("path", path))
			continue
		case retryableStatus(resp.StatusCode) && retries < c.maxRetries && (method == http.MethodGet || resp.StatusCode == http.StatusTooManyRequests):
			delay = backoff(retries)
			if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), c.now()); ok {
				delay = ra
			}
			discard(resp)
			c.log.LogAttrs(ctx, slog.LevelWarn, "fhir request retry",
				slog.String("method", method), slog.String("path", path),
				slog.Int("status", resp.StatusCode), slog.Int("retry", retries+1), slog.Duration("delay", delay))
		default:
			res, err := c.finish(resp, method, path)
			if err != nil && retries < c.maxRetries && errors.Is(err, errBodyRead) && ctx.Err() == nil {
				delay = backoff(retries)
				break
			}
			return res, err
		}
		if err := c.sleep(ctx, delay); err != nil {
			return response{}, &opError{method: method, path: path, what: "canceled while waiting to retry", err: err}
		}
		retries++
	}
}

// fhirResult is the metrics' name for how a request ended.
func fhirResult(resp *http.Response, err error) metrics.FHIRResult {
	switch {
	case err != nil:
		return metrics.FHIRNetwork
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return metrics.FHIROK
	case resp.StatusCode >= 400 && resp.StatusCode <= 499:
		return metrics.FHIRClientError
	}
	return metrics.FHIRServerError
}

func isInvalidator(a Auth) bool {
	_, ok := a.(Invalidator)
	return ok
}

// discard drains a little of a body we do not want, so the connection can
// be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
}

var errBodyRead = errors.New("reading body failed")

// finish reads and checks the body of a final response.
func (c *Client) finish(resp *http.Response, method, path string) (response, error) {
	defer resp.Body.Close()
	res := response{method: method, path: path, status: resp.StatusCode}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return res, nil
	}
	fail := func(what string, err error) (response, error) {
		return response{}, &opError{method: method, path: path, what: what, err: err}
	}
	if resp.ContentLength > c.maxBody {
		return fail("response body exceeds the limit", ErrTooLarge)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !jsonMediaType(ct) {
		return fail("response is not JSON (Content-Type)", ErrInvalidResponse)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		return fail("reading response body failed", errors.Join(errBodyRead, err))
	}
	if int64(len(body)) > c.maxBody {
		return fail("response body exceeds the limit", ErrTooLarge)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 && method != http.MethodGet {
		return res, nil // a create answered with Prefer: return=minimal
	}
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(body) {
		return fail("response body is not a JSON object", ErrInvalidResponse)
	}
	res.body = body
	return res, nil
}

// jsonMediaType accepts FHIR's and plain JSON media types (and the DSTU2-era
// application/json+fhir some servers still send).
func jsonMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case "application/fhir+json", "application/json", "application/json+fhir":
		return true
	}
	return false
}

// checkResourceType makes sure a body is the resource type asked for, so an
// OperationOutcome served with 200 is not mistaken for the resource.
func checkResourceType(body []byte, want string) error {
	var r struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.ResourceType != want {
		return fmt.Errorf("%w: resourceType is not %s", ErrInvalidResponse, want)
	}
	return nil
}

// outcomeNotSupported says whether an OperationOutcome reports that an
// operation is not supported: issue.code "not-supported", or the wording
// HAPI and others use in diagnostics.
func outcomeNotSupported(body []byte) bool {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
			Details     struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return false
	}
	for _, is := range oo.Issue {
		if is.Code == "not-supported" {
			return true
		}
		text := strings.ToLower(is.Diagnostics + " " + is.Details.Text)
		for _, phrase := range []string{"not supported", "unknown operation", "does not know how to handle", "not implemented"} {
			if strings.Contains(text, phrase) {
				return true
			}
		}
	}
	return false
}

// Create POSTs a resource to [base]/{resourceType} and returns what the
// server answered (the created resource, or an empty body on a 201 without
// one). It is not retried except on 429: a create is not idempotent.
func (c *Client) Create(ctx context.Context, resourceType string, resource json.RawMessage) (json.RawMessage, error) {
	if !validType(resourceType) {
		return nil, fmt.Errorf("fhir/client: create: %w", ErrInvalidReference)
	}
	u := c.resourceURL(resourceType)
	res, err := c.send(ctx, http.MethodPost, u, resource)
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusCreated && res.status != http.StatusOK {
		return nil, res.statusError(nil)
	}
	return res.body, nil
}

// BaseURL is the service base this client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// templatePath is a request path fit for errors and logs: resource ids and
// version ids become {id} and {vid} ("/fhir/Patient/{id}"), because an id can
// identify a patient.
func templatePath(p string) string {
	segs := strings.Split(p, "/")
	for i := 1; i < len(segs); i++ {
		prev := segs[i-1]
		switch {
		case prev == "_history":
			segs[i] = "{vid}"
		case validType(prev) && segs[i] != "" && segs[i][0] != '$' && segs[i][0] != '_':
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// ErrPrivateAddress means a connection to a non-public address was refused.
var ErrPrivateAddress = errors.New("fhir/client: refusing to connect to a loopback, private, special-purpose or translated address")

// PublicOnlyHTTPClient is an HTTP client (15 s timeout) that connects only to
// public addresses; use it for the SMART token endpoint too.
func PublicOnlyHTTPClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return ErrPrivateAddress
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !publicAddr(ip) {
			return ErrPrivateAddress
		}
		return nil
	}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	tr.Proxy = nil // a proxy would dial on our behalf, around the check
	return &http.Client{Timeout: defaultTimeout, Transport: tr}
}

// nonPublic are the IANA special-purpose blocks (IPv4 and IPv6
// Special-Purpose Address Registries) that are not globally reachable, and
// the prefixes that translate to IPv4 through a gateway, which could be
// ours: NAT64, 6to4, Teredo, the IPv4-compatible and -translated forms.
// A globally reachable exception inside a refused block (2001:3::/32 AMT,
// 2001:4:112::/48 AS112, 192.0.0.9) is refused with it: none is a FHIR
// server. Multicast, loopback, link-local and RFC 1918 / RFC 4193 space
// are covered by netip's predicates in publicAddr.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address

	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated), :: and ::1
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64, well-known prefix
	netip.MustParsePrefix("64:ff9b:1::/48"),  // NAT64, local use
	netip.MustParsePrefix("100::/64"),        // discard only
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments, Teredo 2001::/32 among them
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4
	netip.MustParsePrefix("3fff::/20"),       // documentation
	netip.MustParsePrefix("fc00::/7"),        // unique local
	netip.MustParsePrefix("fec0::/10"),       // site local (deprecated)
}

// globalUnicast6 is the only IPv6 space IANA allocates for global unicast.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// publicAddr reports whether Tidings may connect to ip. An IPv4-mapped
// address is judged by its IPv4 address. 6to4 and Teredo addresses are
// refused whatever IPv4 address they embed: the relay that would carry
// them may sit inside our network.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return false // 5f00::/16 (SRv6) and the rest of the unallocated space
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
