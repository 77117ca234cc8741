package main

import (
	"strings"
	"testing"
)

// A member who reads Vietnamese and asked for large print gets the EOB
// notice in Vietnamese, set in large type: the contact's language and
// alternate_format go from the contacts API through the worker to the
// captured mail.
func TestNoticeInTheContactsLanguageAndLargePrint(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ts.putContact(t, "Patient2", `{"email":"member@example.org","language":"vi","alternate_format":"large-print"}`)
	got := decodedText(t, ts.notifyOneMail(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json").Data)
	for _, want := range []string{"Quý vị có một Bản Giải thích Quyền lợi mới\n", "Xin chào,", `<html lang="vi">`, "font-size: 22px", "Phần quý vị phải trả"} {
		if !strings.Contains(got, want) {
			t.Errorf("the mail lacks %q:\n%s", want, got)
		}
	}
}
