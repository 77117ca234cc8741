package client

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	maxTokenBody        = 64 << 10
	// refreshMargin is the most a token is renewed ahead of its expiry; a
	// short-lived token is renewed a tenth of its lifetime ahead instead.
	refreshMargin = 30 * time.Second
	// maxTokenLifetime bounds how long a token is cached whatever the
	// server says.
	maxTokenLifetime  = 24 * time.Hour
	tokenFetchTimeout = 30 * time.Second
)

// SMARTBackend authorizes requests with SMART Backend Services (HL7 SMART App
// Launch v2): an OAuth 2.0 client_credentials grant authenticated by a
// private_key_jwt client assertion signed RS384 (RSA key) or ES384 (P-384
// key), with iss = sub = ClientID, aud = TokenURL, exp four minutes ahead and
// a fresh random jti on every request.
//
// The access token is cached until shortly before expires_in (30 s, or a
// tenth of the lifetime when that is shorter); concurrent callers share one
// token request. A SMARTBackend must not be copied after first use; it is safe
// for concurrent use. Token endpoint failures are not retried here: the
// request that needed the token fails and its caller retries later.
type SMARTBackend struct {
	TokenURL string
	ClientID string
	KeyID    string        // JWS "kid": the key's id in the client's registered JWK Set
	Key      crypto.Signer // *rsa.PrivateKey (>= 2048 bits) or *ecdsa.PrivateKey on P-384
	Scopes   []string      // e.g. system/Appointment.rs
	HTTP     *http.Client  // default: 15 s timeout; redirects are always refused
	Now      func() time.Time

	mu        sync.Mutex
	token     string
	refreshAt time.Time
	call      *tokenCall
}

type tokenCall struct {
	done  chan struct{}
	token string
	err   error
}

// Authorize sets "Authorization: Bearer <access token>", fetching a token
// when none is cached or the cached one is about to expire.
func (s *SMARTBackend) Authorize(ctx context.Context, req *http.Request) error {
	tok, err := s.accessToken(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// Invalidate drops the cached token if it is the one in authorization, so
// the next Authorize fetches a new one.
func (s *SMARTBackend) Invalidate(authorization string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && authorization == "Bearer "+s.token {
		s.token = ""
		s.refreshAt = time.Time{}
	}
}

// LogValue shows only what identifies the client, never the key or token.
func (s *SMARTBackend) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_url", s.tokenURLPath()),
		slog.String("client_id", s.ClientID),
		slog.String("kid", s.KeyID),
		slog.String("key", redacted),
	)
}

// String keeps the key and token out of %v and %s.
func (s *SMARTBackend) String() string {
	return fmt.Sprintf("SMARTBackend(client_id=%q key=%s)", s.ClientID, redacted)
}

// Format keeps the key and token out of every fmt verb.
func (s *SMARTBackend) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

func (s *SMARTBackend) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// tokenURLPath is the token URL without query or credentials, for messages.
func (s *SMARTBackend) tokenURLPath() string {
	u, err := url.Parse(s.TokenURL)
	if err != nil {
		return "[unparsable]"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func (s *SMARTBackend) accessToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.token != "" && s.now().Before(s.refreshAt) {
		tok := s.token
		s.mu.Unlock()
		return tok, nil
	}
	call := s.call
	if call == nil {
		call = &tokenCall{done: make(chan struct{})}
		s.call = call
		// The fetch outlives a caller that gives up: the others still wait
		// for it. It is bounded by tokenFetchTimeout.
		go s.refresh(context.WithoutCancel(ctx), call)
	}
	s.mu.Unlock()
	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		return "", fmt.Errorf("fhir/client: waiting for access token: %w", ctx.Err())
	}
}

func (s *SMARTBackend) refresh(ctx context.Context, call *tokenCall) {
	ctx, cancel := context.WithTimeout(ctx, tokenFetchTimeout)
	defer cancel()
	issued := s.now()
	tok, lifetime, err := s.fetchToken(ctx, issued)
	s.mu.Lock()
	if err == nil {
		s.token = tok
		margin := min(refreshMargin, lifetime/10)
		// A token without expires_in serves the waiting callers only.
		s.refreshAt = issued.Add(lifetime - margin)
	}
	s.call = nil
	s.mu.Unlock()
	call.token, call.err = tok, err
	close(call.done)
}

func (s *SMARTBackend) validate() error {
	var errs []error
	if _, err := parseEndpoint(s.TokenURL); err != nil {
		errs = append(errs, fmt.Errorf("TokenURL: %w", err))
	}
	if s.ClientID == "" {
		errs = append(errs, errors.New("ClientID is empty"))
	}
	if s.KeyID == "" {
		errs = append(errs, errors.New("KeyID is empty"))
	}
	if _, err := jwsAlg(s.Key); err != nil {
		errs = append(errs, fmt.Errorf("Key: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fhir/client: SMART backend configuration: %w", err)
	}
	return nil
}

func (s *SMARTBackend) httpClient() *http.Client {
	hc := http.Client{Timeout: defaultTimeout}
	if s.HTTP != nil {
		hc = *s.HTTP
	}
	// A client assertion must never be re-sent to wherever a redirect points.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return ErrRedirectRefused }
	return &hc
}

// fetchToken runs one client_credentials grant.
func (s *SMARTBackend) fetchToken(ctx context.Context, now time.Time) (string, time.Duration, error) {
	if err := s.validate(); err != nil {
		return "", 0, err
	}
	assertion, err := signAssertion(s.Key, s.KeyID, s.ClientID, s.TokenURL, now)
	if err != nil {
		return "", 0, err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	}
	if len(s.Scopes) > 0 {
		form.Set("scope", strings.Join(s.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, errors.New("fhir/client: token request: cannot build request")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	path := req.URL.Path
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return "", 0, transportError(http.MethodPost, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return "", 0, transportError(http.MethodPost, path, err)
	}
	if len(body) > maxTokenBody {
		return "", 0, &opError{method: http.MethodPost, path: path, what: "token response too large", err: ErrTooLarge}
	}
	if resp.StatusCode != http.StatusOK {
		se := &StatusError{Method: http.MethodPost, Path: path, StatusCode: resp.StatusCode}
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
			se.kind = ErrUnauthorized
		}
		if code := oauthErrorCode(body); code != "" {
			return "", 0, fmt.Errorf("%w: oauth error %s", se, code)
		}
		return "", 0, se
	}
	tok, lifetime, err := parseTokenResponse(body)
	if err != nil {
		return "", 0, &opError{method: http.MethodPost, path: path, what: err.Error(), err: err}
	}
	return tok, lifetime, nil
}

// oauthErrorCode returns the RFC 6749 section 5.2 error code of a token
// error response when it is one of the registered codes, which are safe to
// show; anything else returns "".
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	switch e.Error {
	case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "temporarily_unavailable", "server_error":
		return e.Error
	}
	return ""
}

// parseTokenResponse reads an RFC 6749 section 5.1 access token response.
// expires_in may be a number or a numeric string (some servers send one);
// when it is missing the lifetime is 0 and the token is not cached.
func parseTokenResponse(body []byte) (string, time.Duration, error) {
	var r struct {
		AccessToken *string         `json:"access_token"`
		TokenType   *string         `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", 0, fmt.Errorf("%w: token response is not a JSON object", ErrInvalidResponse)
	}
	if r.AccessToken == nil || *r.AccessToken == "" {
		return "", 0, fmt.Errorf("%w: token response: access_token missing", ErrInvalidResponse)
	}
	for _, c := range []byte(*r.AccessToken) {
		if c <= ' ' || c >= 0x7f {
			return "", 0, fmt.Errorf("%w: token response: access_token has characters not allowed in a header", ErrInvalidResponse)
		}
	}
	if r.TokenType == nil || !strings.EqualFold(*r.TokenType, "bearer") {
		return "", 0, fmt.Errorf("%w: token response: token_type is not bearer", ErrInvalidResponse)
	}
	var lifetime time.Duration
	if len(r.ExpiresIn) > 0 && string(r.ExpiresIn) != "null" {
		raw := strings.Trim(string(r.ExpiresIn), `"`)
		secs, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || secs < 0 {
			return "", 0, fmt.Errorf("%w: token response: expires_in is not a non-negative integer", ErrInvalidResponse)
		}
		lifetime = min(time.Duration(min(secs, int64(maxTokenLifetime/time.Second)))*time.Second, maxTokenLifetime)
	}
	return *r.AccessToken, lifetime, nil
}
