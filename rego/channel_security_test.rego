# Rule 2, channel security: PHI goes only over a channel that may carry PHI
# and enforces TLS or encrypts the message; otherwise the notice goes
# portal-only with every PHI field redacted. Sample notices and helpers are in
# notice_test.rego.
package tidings.notice_test

import data.tidings.notice

test_phi_on_tls_enforced_channel_is_sent_as_is if {
	notice.decision == allowed with input as eob_email
}

test_phi_on_encrypted_message_without_tls_is_sent_as_is if {
	req := with_channel(eob_email, {"type": "email", "tls_enforced": false, "message_encrypted": true, "encryption_available": true})
	notice.decision == allowed with input as req
}

test_phi_on_unprotected_channel_goes_portal_only if {
	req := with_channel(eob_email, unprotected_email)
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_channel_without_security_flags_is_unprotected if {
	req := with_channel(eob_email, {"type": "email"})
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_only_boolean_true_counts_as_protected if {
	req := with_channel(eob_email, {"type": "email", "tls_enforced": "true", "message_encrypted": 1, "encryption_available": true})
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_encryption_being_available_is_not_encryption if {
	req := with_channel(eob_email, object.union(unprotected_email, {"encryption_available": true}))
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_portal_link_alone_on_unprotected_channel_needs_nothing if {
	req := with_payload(with_channel(eob_email, unprotected_email), portal_link)
	notice.decision == allowed with input as req
}

test_only_phi_fields_are_redacted if {
	req := with_payload(with_channel(appointment_email, unprotected_email), object.union(portal_link, {"appointment_date": "2024-04-02"}))
	notice.decision == allowed_with(["appointment_date"], ["portal_only"]) with input as req
}

test_portal_channel_is_judged_by_its_flags if {
	secure := {"type": "portal", "tls_enforced": true, "message_encrypted": false, "encryption_available": false}
	notice.decision == allowed with input as with_channel(eob_email, secure)
	insecure := object.union(secure, {"tls_enforced": false})
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as with_channel(eob_email, insecure)
}

test_fields_outside_the_allowlist_count_as_phi if {
	req := with_payload(with_channel(eob_email, unprotected_email), object.union(portal_link, {"diagnosis": "E11.9"}))
	notice.decision == denied_with(
		["field \"diagnosis\" is not allowed in a eob notice on email"],
		["diagnosis"],
		["portal_only"],
	) with input as req
}

test_non_phi_list_is_read_from_data if {
	req := with_payload(with_channel(eob_email, unprotected_email), object.union(portal_link, {"payer_name": "Example Health Plan"}))
	notice.decision == allowed_with(["payer_name"], ["portal_only"]) with input as req
	notice.decision == allowed with input as req with data.data.non_phi_fields as ["portal_url", "payer_name"]
}

test_sms_never_counts_as_protected if {
	# Even if compliance allow-listed a PHI field for SMS, it would not be sent
	# in the message: SMS cannot carry PHI (data/channels.json).
	req := with_payload(
		with_channel(eob_email, {"type": "sms", "tls_enforced": true, "message_encrypted": true, "encryption_available": true}),
		object.union(portal_link, {"payer_name": "Example Health Plan"}),
	)
	notice.decision == allowed_with(["payer_name"], ["portal_only"]) with input as req
		with data.data.allowlist.eob.sms as ["portal_url", "payer_name"]
}

test_channel_properties_are_read_from_data if {
	req := with_payload(
		with_channel(eob_email, {"type": "push", "tls_enforced": true}),
		object.union(portal_link, {"payer_name": "Example Health Plan"}),
	)
	notice.decision == allowed with input as req
		with data.data.allowlist.eob.push as ["portal_url", "payer_name"]
		with data.data.channels.push.may_carry_phi as true
}
