package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestSMSSettingsAreCheckedTogetherAndTheTokenNeverShows(t *testing.T) {
	token := "sms-auth-token-canary"
	c, _ := FromEnv(env(map[string]string{
		"TIDINGS_SMS_BASE_URL":    "http://sms.example.org",
		"TIDINGS_SMS_ACCOUNT_SID": "AC-bad!",
		"TIDINGS_SMS_AUTH_TOKEN":  token,
		"TIDINGS_SMS_FROM":        "555-0100",
	}))
	all := strings.Join(c.Validate(RoleServe|RoleWorker), "\n")
	for _, want := range []string{
		"TIDINGS_SMS_BASE_URL must be an https URL",
		"TIDINGS_SMS_ACCOUNT_SID is required",
		"TIDINGS_SMS_FROM must be an E.164 number",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if logged := fmt.Sprint(c.LogValue()); strings.Contains(all+logged, token) {
		t.Errorf("the SMS token was printed:\n%s\n%s", all, logged)
	}

	ok, _ := FromEnv(env(map[string]string{
		"TIDINGS_SMS_BASE_URL":    "https://api.twilio.com",
		"TIDINGS_SMS_ACCOUNT_SID": "AC0123456789",
		"TIDINGS_SMS_AUTH_TOKEN":  token,
		"TIDINGS_SMS_FROM":        "+15550100000",
	}))
	if p := ok.SMS.problems(); len(p) != 0 || !ok.SMS.Enabled() {
		t.Errorf("a complete SMS config: problems %v, enabled %v", p, ok.SMS.Enabled())
	}
	if none, _ := FromEnv(env(nil)); none.SMS.Enabled() || len(none.SMS.problems()) != 0 {
		t.Error("no SMS settings should mean no SMS channel and no problem")
	}
}
