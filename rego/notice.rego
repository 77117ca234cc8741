# Patient notice policy: may this notice payload go out on this channel?
#
# Tidings asks for data.tidings.notice.decision once for every notice it wants
# to send. Anything that is not explicitly allowed is denied: a missing field,
# an unknown notice type or channel, or a payload field nobody listed.
#
# INPUT (one JSON object per notice)
#
#   {
#     "notice_type": "eob",          what the notice is about; "eob" is an
#                                    Explanation of Benefits notice
#     "channel": {
#       "type": "email",             how it is delivered
#       "tls_enforced": true,        the connection to the mail server must use
#                                    TLS, with no fallback to plaintext
#       "message_encrypted": false   the message itself is encrypted for the
#                                    recipient (S/MIME or OpenPGP)
#     },
#     "payload": {                   every field the notice would carry, by name
#       "payer_name": "...",
#       "service_date": "2024-03-01",
#       "provider_name": "...",
#       "patient_share": 45.2,
#       "portal_url": "https://..."
#     },
#     "purpose": "payment",          why the disclosure happens (treatment,
#                                    payment, operations); optional, not yet
#                                    checked by any rule
#     "facts": {                     coarse properties of the source resource,
#       "use": "claim",              never codes or names; for an EOB its
#       "outcome": "complete"        use (claim | preauthorization |
#     }                              predetermination) and outcome
#   }
#
# OUTPUT: data.tidings.notice.decision
#
#   {
#     "allow": true,                 true if and only if "deny" is empty
#     "deny": [],                    reasons, sorted; each names fields, never
#                                    their values
#     "redact": [],                  fields to remove before sending (none yet)
#     "obligations": {}              conditions on sending (none yet)
#   }
#
# DATA (files in rego/data/ load under data.data, because OPA files a JSON
# document under the path of the folder that holds it)
#
#   data/allowlist.json  data.data.allowlist[notice_type][channel] lists the
#                        payload fields a notice may carry on that channel
#   data/non_phi.json    data.data.non_phi_fields lists the payload fields that
#                        are not PHI; every other field counts as PHI
#   data/settings.json   data.data.settings: switches compliance may flip, such
#                        as whether preauthorizations are notified
package tidings.notice

allowlist := data.data.allowlist

non_phi_fields := {field | some field in data.data.non_phi_fields}

# Fields every notice must carry. The portal link is how the patient reaches the
# full document, so a notice without it has no purpose.
required_fields := {"portal_url"}

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"redact": [],
	"obligations": {},
}

# ---------------------------------------------------------------------------
# Shape of the input. Each helper is undefined when the input lacks the part,
# and a missing part is itself a reason to deny.

notice_type := input.notice_type if {
	is_string(input.notice_type)
	input.notice_type != ""
}

channel_type := input.channel.type if {
	is_string(input.channel.type)
	input.channel.type != ""
}

payload := input.payload if is_object(input.payload)

deny contains "input has no notice_type" if not notice_type

deny contains "input has no channel.type" if not channel_type

deny contains "input has no payload object" if not payload

# ---------------------------------------------------------------------------
# Rule 1, minimum necessary: a notice carries only the fields listed for its
# notice type and channel in data/allowlist.json.

deny contains sprintf("notice type %q is not known", [nt]) if {
	nt := notice_type
	not allowlist[nt]
}

deny contains sprintf("channel %q is not allowed for a %s notice", [ch, nt]) if {
	nt := notice_type
	ch := channel_type
	allowlist[nt]
	not allowlist[nt][ch]
}

deny contains sprintf("field %q is not allowed in a %s notice on %s", [field, nt, ch]) if {
	nt := notice_type
	ch := channel_type
	allowed := allowlist[nt][ch]
	some field, _ in payload
	not field in allowed
}

# ---------------------------------------------------------------------------
# Rule 2, channel security: PHI travels only on a channel that enforces TLS or
# encrypts the message. Only the value true counts; "true" or 1 do not.

phi_fields contains field if {
	some field, _ in payload
	not field in non_phi_fields
}

channel_protected if input.channel.tls_enforced == true

channel_protected if input.channel.message_encrypted == true

deny contains msg if {
	count(phi_fields) > 0
	not channel_protected
	msg := sprintf(
		"the channel is neither TLS-enforced nor message-encrypted, so the payload may not carry PHI fields: %s",
		[concat(", ", sort(phi_fields))],
	)
}

# ---------------------------------------------------------------------------
# Rule 3, required fields: each must be present as a non-empty string.

deny contains sprintf("field %q is required", [field]) if {
	some field in required_fields
	not has_field(field)
}

deny contains sprintf("field %q must be a non-empty string", [field]) if {
	some field in required_fields
	value := payload[field]
	not non_empty_string(value)
}

has_field(field) if _ = payload[field]

non_empty_string(value) if {
	is_string(value)
	trim_space(value) != ""
}

# ---------------------------------------------------------------------------
# Rule 4, what an EOB notice is for: it tells a member about a processed claim.
# By default (data/settings.json) a preauthorization or predetermination is not
# announced as if it were a claim, and an EOB whose outcome is "error" is not
# notified at all.

settings := data.data.settings

deny contains sprintf("an EOB with use %q is not notified (settings.eob.notify_use lists %s)", [use, concat(", ", sort(settings.eob.notify_use))]) if {
	notice_type == "eob"
	use := input.facts.use
	not use in settings.eob.notify_use
}

deny contains "an EOB whose outcome is \"error\" is not notified (settings.eob.notify_error_outcome is false)" if {
	notice_type == "eob"
	input.facts.outcome == "error"
	not settings.eob.notify_error_outcome
}
