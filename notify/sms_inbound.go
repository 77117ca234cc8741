package notify

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
)

// SMSSignature is the provider's signature of a callback (Twilio's
// X-Twilio-Signature): base64 of HMAC-SHA1, keyed with the auth token, over
// the full URL the provider posted to followed by each form parameter's
// name and value, sorted by name.
func SMSSignature(authToken, fullURL string, form url.Values) string {
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(fullURL))
	names := make([]string, 0, len(form))
	for k := range form {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		vs := append([]string(nil), form[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			mac.Write([]byte(k))
			mac.Write([]byte(v))
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ValidSMSSignature reports, in constant time, whether sig is the
// provider's signature of the callback. An empty token or signature is
// never valid.
func ValidSMSSignature(authToken, fullURL string, form url.Values, sig string) bool {
	if authToken == "" || sig == "" {
		return false
	}
	return hmac.Equal([]byte(SMSSignature(authToken, fullURL, form)), []byte(sig))
}

// SMS keyword replies, as carriers and providers honour them.
const (
	SMSKeywordNone  = ""
	SMSKeywordStop  = "stop"
	SMSKeywordStart = "start"
)

var (
	stopWords  = map[string]bool{"STOP": true, "STOPALL": true, "UNSUBSCRIBE": true, "CANCEL": true, "END": true, "QUIT": true}
	startWords = map[string]bool{"START": true, "YES": true, "UNSTOP": true}
)

// SMSKeyword reads an inbound text as an opt-out (STOP, STOPALL,
// UNSUBSCRIBE, CANCEL, END, QUIT) or opt-in (START, YES, UNSTOP) keyword:
// the whole message, ignoring case, surrounding space and a final period
// or exclamation mark. Anything else is SMSKeywordNone.
func SMSKeyword(body string) string {
	w := strings.ToUpper(strings.TrimSpace(body))
	w = strings.TrimRight(w, ".!")
	switch {
	case stopWords[w]:
		return SMSKeywordStop
	case startWords[w]:
		return SMSKeywordStart
	}
	return SMSKeywordNone
}
