# Rule 2b: SMS (and push) may carry only portal-only content. Sample notices
# and helpers are in notice_test.rego.
package tidings.notice_test

import data.tidings.notice

sms := {"type": "sms", "tls_enforced": false, "message_encrypted": false, "encryption_available": false}

test_sms_is_always_portal_only if {
	req := with_payload(with_channel(eob_email, sms), portal_link)
	notice.decision == allowed_with([], ["portal_only"]) with input as req
}

test_sms_is_portal_only_even_when_compliance_lists_nothing_as_phi if {
	# A payer name declared non-PHI and allow-listed for SMS still does not
	# make the SMS more than a link: portal_only is set, and Tidings' SMS
	# carries only the link.
	req := with_payload(with_channel(eob_email, sms), object.union(portal_link, {"payer_name": "Example Health Plan"}))
	notice.decision == allowed_with([], ["portal_only"]) with input as req
		with data.data.allowlist.eob.sms as ["portal_url", "payer_name"]
		with data.data.non_phi_fields as ["portal_url", "payer_name"]
}

test_sms_with_phi_is_denied if {
	req := with_channel(appointment_email, sms)
	not notice.decision.allow with input as req
	notice.decision.obligations.portal_only with input as req
}

test_sms_to_a_patient_with_a_confidential_address_is_denied if {
	req := with_contact(with_payload(with_channel(eob_email, sms), portal_link), {"has_confidential_address": true})
	notice.decision == denied_with(
		["the patient asked to be reached only at a confidential address, which sms does not reach"],
		[],
		["portal_only", "route_to_confidential_address"],
	) with input as req
}

test_a_confidential_address_does_not_stop_email if {
	req := with_contact(eob_email, {"has_confidential_address": true})
	notice.decision == allowed_with([], ["route_to_confidential_address"]) with input as req
}

test_sms_opt_out_denies if {
	req := with_contact(with_payload(with_channel(eob_email, sms), portal_link), {"opted_out_channels": ["sms"]})
	notice.decision == denied_with(["the patient opted out of sms"], [], ["portal_only"]) with input as req
}
