# Rule 4, patient rights: a purpose the patient unsubscribed from (the
# one-click link of a marketing mail, RFC 8058). Sample notices and helpers
# are in notice_test.rego.
package tidings.notice_test

import data.tidings.notice

marketing_notice := with_contact(with_field(appointment_email, "purpose", "marketing"), {"marketing_authorized": true})

test_unsubscribed_purpose_is_denied if {
	req := with_contact(with_field(appointment_email, "purpose", "marketing"), {"marketing_authorized": true, "opted_out_purposes": ["marketing"]})
	notice.decision == denied(["the patient unsubscribed from marketing notices"]) with input as req
}

test_marketing_without_unsubscribe_is_allowed if {
	notice.decision == allowed with input as marketing_notice
	notice.decision == allowed with input as with_contact(marketing_notice, {"marketing_authorized": true, "opted_out_purposes": []})
}

# Unsubscribing from marketing never stops a required notice.
test_required_notices_ignore_a_marketing_unsubscribe if {
	every purpose in ["payment", "operations", "treatment"] {
		req := with_contact(with_field(appointment_email, "purpose", purpose), {"opted_out_purposes": ["marketing"]})
		notice.decision == allowed with input as req
	}
	notice.decision == allowed with input as with_contact(eob_email, {"opted_out_purposes": ["marketing"]})
}
