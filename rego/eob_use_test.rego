# Rule 5, what an EOB notice is for: by default (data/settings.json) claims
# are notified, preauthorizations and predeterminations are not, and an EOB
# whose outcome is "error" is not. Sample notices and helpers are in
# notice_test.rego.
package tidings.notice_test

import data.tidings.notice

test_claim_eob_is_allowed if {
	notice.decision == allowed with input as with_facts(eob_email, {"use": "claim", "outcome": "complete"})
}

test_eob_without_facts_is_judged_on_payload_alone if {
	notice.decision == allowed with input as object.remove(eob_email, ["facts"])
}

test_preauthorization_is_not_notified_by_default if {
	notice.decision == denied(["an EOB with use \"preauthorization\" is not notified (settings.eob.notify_use lists claim)"]) with input as with_facts(eob_email, {"use": "preauthorization", "outcome": "queued"})
}

test_preauthorization_is_notified_when_settings_allow_it if {
	notice.decision == allowed with input as with_facts(eob_email, {"use": "preauthorization"})
		with data.data.settings.eob.notify_use as ["claim", "preauthorization"]
}

test_error_outcome_is_not_notified_by_default if {
	notice.decision == denied(["an EOB whose outcome is \"error\" is not notified (settings.eob.notify_error_outcome is false)"]) with input as with_facts(eob_email, {"use": "claim", "outcome": "error"})
}

test_error_outcome_is_notified_when_settings_allow_it if {
	notice.decision == allowed with input as with_facts(eob_email, {"use": "claim", "outcome": "error"})
		with data.data.settings.eob.notify_error_outcome as true
}

test_eob_rules_do_not_apply_to_appointments if {
	req := with_facts(appointment_email, {"use": "preauthorization", "outcome": "error"})
	notice.decision == allowed with input as req
}
