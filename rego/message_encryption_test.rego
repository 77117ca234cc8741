# Rule 3 on a message encrypted for the patient's own key: channel.security
# "message-encrypted" lets a sensitive notice go in the message with only
# the revealing fields redacted, where over TLS alone it goes portal-only.
# Sample notices and helpers are in notice_test.rego and sensitive_test.rego.
package tidings.notice_test

import data.tidings.notice

encrypted_email := {"type": "email", "tls_enforced": true, "message_encrypted": true, "encryption_available": true, "security": "message-encrypted"}

test_sensitive_eob_goes_in_an_encrypted_message_without_the_provider if {
	req := with_channel(mental_health_eob, encrypted_email)
	notice.decision == allowed_with(["provider_name"], ["generic_provider_label"]) with input as req
}

test_sensitive_appointment_in_an_encrypted_message_names_neither_provider_nor_location if {
	req := with_channel(with_facts(appointment_email, {"sensitive_categories": ["hiv_sti"]}), encrypted_email)
	notice.decision == allowed_with(["location_name", "provider_name"], ["generic_provider_label"]) with input as req
}

test_sensitive_eob_over_tls_alone_still_goes_portal_only if {
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as mental_health_eob
}

test_message_encrypted_security_needs_the_message_encrypted_flag if {
	req := with_channel(mental_health_eob, object.union(encrypted_email, {"message_encrypted": false}))
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as req
}

test_message_encrypted_security_does_not_make_sms_carry_phi if {
	req := with_channel(mental_health_eob, object.union(encrypted_email, {"type": "sms"}))
	notice.decision.obligations.portal_only == true with input as req
		with data.data.allowlist.eob.sms as ["portal_url", "payer_name", "service_date", "provider_name", "patient_share"]
}

test_encrypted_message_carries_a_plain_notice_whole if {
	notice.decision == allowed with input as with_channel(eob_email, encrypted_email)
}
