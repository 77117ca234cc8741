package config

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// SMS configures the SMS channel's provider, a Twilio-compatible HTTP API.
// All of BaseURL, AccountSID, AuthToken and From, or none (no SMS channel).
// serve needs the token too: it checks the provider's signatures on
// delivery statuses and inbound STOP/START replies.
type SMS struct {
	BaseURL    string // TIDINGS_SMS_BASE_URL, e.g. https://api.twilio.com
	AccountSID string // TIDINGS_SMS_ACCOUNT_SID
	AuthToken  string // TIDINGS_SMS_AUTH_TOKEN (secret)
	From       string // TIDINGS_SMS_FROM: the sending number, E.164
}

// Enabled reports whether an SMS provider is configured.
func (s SMS) Enabled() bool {
	return s.BaseURL != "" || s.AccountSID != "" || s.AuthToken != "" || s.From != ""
}

// LogValue prints the SMS settings without the token.
func (s SMS) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", s.BaseURL), slog.Bool("auth_token_set", s.AuthToken != ""),
		slog.Bool("from_set", s.From != ""))
}

func smsFromEnv(get func(k, def string) string) SMS {
	return SMS{
		BaseURL:    get("TIDINGS_SMS_BASE_URL", ""),
		AccountSID: get("TIDINGS_SMS_ACCOUNT_SID", ""),
		AuthToken:  get("TIDINGS_SMS_AUTH_TOKEN", ""),
		From:       get("TIDINGS_SMS_FROM", ""),
	}
}

var (
	smsSID  = regexp.MustCompile(`^[A-Za-z0-9]{2,64}$`)
	smsE164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
)

// problems lists what is wrong with the SMS settings; none when unset.
func (s SMS) problems() []string {
	if !s.Enabled() {
		return nil
	}
	var p []string
	if u, err := url.Parse(s.BaseURL); err != nil || u.Host == "" || u.User != nil ||
		(u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		p = append(p, "TIDINGS_SMS_BASE_URL must be an https URL (http only on loopback)")
	}
	if !smsSID.MatchString(s.AccountSID) {
		p = append(p, "TIDINGS_SMS_ACCOUNT_SID is required (letters and digits)")
	}
	if strings.TrimSpace(s.AuthToken) == "" {
		p = append(p, "TIDINGS_SMS_AUTH_TOKEN is required with TIDINGS_SMS_BASE_URL")
	}
	if !smsE164.MatchString(s.From) {
		p = append(p, "TIDINGS_SMS_FROM must be an E.164 number such as +15551234567")
	}
	return p
}
