# Patient notice policy: may this notice go out on this channel, and how?
#
# Tidings asks for data.tidings.notice.decision once for every notice it wants
# to send. Anything that is not explicitly allowed is denied: a missing field,
# an unknown notice type or channel, or a payload field nobody listed.
#
# The input and the decision are described field by field in README.md and,
# formally, in decision.schema.json (JSON Schema draft 2020-12). In short:
#
# INPUT
#
#   notice_type   "eob" | "appointment"
#   channel       {type: "email" | "sms" | "push" | "portal", tls_enforced,
#                  message_encrypted, encryption_available,
#                  security: "portal-authenticated" | "message-encrypted"
#                  (optional)}
#   payload       every field the notice would carry, by name
#   purpose       "payment" | "operations" | "treatment" | "marketing" (optional)
#   facts         coarse properties of the source resource, never codes or names:
#                  use, outcome, sensitive_categories, has_sensitive_diagnosis,
#                  minor (optional, every key optional)
#   contact       the patient's choices: opted_out_channels,
#                  opted_out_purposes, has_confidential_address, restrictions,
#                  marketing_authorized, language, alternate_format,
#                  email_suppressed (optional, every key optional)
#
# OUTPUT: data.tidings.notice.decision
#
#   allow         true if and only if deny is empty
#   deny          reasons, sorted; each names fields, channels or settings,
#                  never the values of payload fields
#   redact        payload fields to drop before sending, sorted
#   obligations   conditions on sending, each always present as true or false:
#                  portal_only, requires_message_encryption,
#                  generic_provider_label, route_to_confidential_address
#
# DATA (files in rego/data/ load under data.data, because OPA files a JSON
# document under the path of the folder that holds it)
#
#   data/allowlist.json  allowlist[notice_type][channel]: the payload fields a
#                        notice may carry on that channel
#   data/channels.json   channels[channel]: the known channels, and whether one
#                        may ever carry PHI (sms and push may not)
#   data/non_phi.json    non_phi_fields: the payload fields that are not PHI;
#                        every other field counts as PHI
#   data/sensitive.json  sensitive.categories: the sensitive categories and
#                        their ICD-10-CM and SNOMED CT value sets; Tidings
#                        matches an EOB's diagnoses and an appointment's
#                        reasons, service type and specialty against them to
#                        fill facts.sensitive_categories
#   data/settings.json   settings: switches compliance may flip
#
# FLAGS. A flag that loosens a rule (tls_enforced, message_encrypted,
# encryption_available, marketing_authorized) counts only as the JSON value
# true. A flag that tightens a rule (has_sensitive_diagnosis,
# has_confidential_address) counts unless it is absent or false, and the list
# sensitive_categories counts unless it is absent, null or empty: a value of
# the wrong type errs on the safe side.
package tidings.notice

import data.data.allowlist
import data.data.channels
import data.data.settings

# Fields every notice must carry. The portal link is how the patient reaches the
# full document, so a notice without it has no purpose.
required_fields := {"portal_url"}

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"redact": sort(redact),
	"obligations": {
		"portal_only": portal_only,
		"requires_message_encryption": requires_message_encryption,
		"generic_provider_label": generic_provider_label,
		"route_to_confidential_address": route_to_confidential_address,
	},
}

default portal_only := false

default requires_message_encryption := false

default generic_provider_label := false

default route_to_confidential_address := false

# ---------------------------------------------------------------------------
# Rule 0, input shape. Each helper is undefined when the input lacks the part,
# and a missing part is itself a reason to deny.

notice_type := input.notice_type if {
	is_string(input.notice_type)
	input.notice_type != ""
}

channel_type := input.channel.type if {
	is_string(input.channel.type)
	input.channel.type != ""
}

has_payload if is_object(input.payload)

# Without a payload object, rules read an empty payload.
default payload := {}

payload := input.payload if has_payload

# The payload's field names, as a set.
fields := object.keys(payload)

deny contains "input has no notice_type" if not notice_type

deny contains "input has no channel.type" if not channel_type

deny contains "input has no payload object" if not has_payload

deny contains sprintf("channel type %q is not known", [ch]) if {
	ch := channel_type
	not channels[ch]
}

# ---------------------------------------------------------------------------
# Rule 1, minimum necessary: a notice carries only the fields listed for its
# notice type and channel in data/allowlist.json. SMS and push list only the
# portal link, so any PHI field on them is denied here.

# The fields this notice type may carry on this channel; undefined when the
# allowlist has no entry for them, and then the two rules after it say why.
allowed_fields := allowlist[notice_type][channel_type]

deny contains sprintf("notice type %q is not known", [nt]) if {
	not allowed_fields
	nt := notice_type
	not allowlist[nt]
}

deny contains sprintf("channel %q is not allowed for a %s notice", [ch, nt]) if {
	not allowed_fields
	nt := notice_type
	ch := channel_type
	channels[ch]
	allowlist[nt]
}

deny contains sprintf("field %q is not allowed in a %s notice on %s", [field, notice_type, channel_type]) if {
	some field in object.keys(object.remove(payload, allowed_fields))
}

# Rule 1b, required fields: each must be present as a non-empty string.

deny contains sprintf("field %q is required", [field]) if {
	some field in (required_fields - fields)
}

deny contains sprintf("field %q must be a non-empty string", [field]) if {
	some field in required_fields
	value := payload[field]
	not non_empty_string(value)
}

# ---------------------------------------------------------------------------
# Rule 2, channel security: PHI travels only on a channel that may carry PHI
# (data/channels.json) and that enforces TLS or encrypts the message. On any
# other channel the notice is not denied: it goes portal-only, with every PHI
# field redacted, so the message carries only the portal link.

phi_fields := object.keys(object.remove(payload, data.data.non_phi_fields))

phi_capable_channel if channels[channel_type].may_carry_phi == true

channel_protected if {
	phi_capable_channel
	protected_in_transit
}

protected_in_transit if input.channel.tls_enforced == true

protected_in_transit if input.channel.message_encrypted == true

# Under requires_message_encryption the message will be encrypted before it
# leaves, or it does not leave at all.
protected_in_transit if requires_message_encryption

# The authenticated portal shows the notice over HTTPS to a patient who has
# proved who they are (a one-time code sent to the address of record, or the
# date of birth). The portal without that security shows nothing but the
# link, like any unprotected channel. What it may show is
# allowlist[notice_type]["portal"].
authenticated_portal if {
	channel_type == "portal"
	input.channel.security == "portal-authenticated"
}

protected_in_transit if authenticated_portal

# The channel is checked first: on a protected one, which is the usual case,
# the PHI fields need not be worked out at all.
phi_on_unprotected_channel if {
	not channel_protected
	phi_fields != set()
}

portal_only if phi_on_unprotected_channel

# Rule 2b, SMS and push carry only the portal link. On a channel that may never
# carry PHI (data/channels.json) the notice is portal-only whatever its payload
# holds, even when nothing in it counts as PHI: the message says that something
# waits in the portal and nothing else, and Tidings sends no SMS unless this
# obligation is set. A confidential-communication address (HIPAA 45 CFR
# 164.522(b)) is an email address: only email and the portal reach it, so a
# patient who gave one gets nothing on these channels.

phi_free_channel if {
	channels[channel_type]
	not phi_capable_channel
}

portal_only if phi_free_channel

deny contains sprintf("the patient asked to be reached only at a confidential address, which %s does not reach", [ch]) if {
	phi_free_channel
	ch := channel_type
	input.contact.has_confidential_address != false
}

# ---------------------------------------------------------------------------
# Rule 3, sensitive categories: a notice about a claim or appointment in a
# sensitive category (mental health, substance use, HIV/STI, reproductive
# health, genetic testing; data/sensitive.json) names no provider or location,
# since the name can reveal the service, and goes portal-only. Every category
# name counts, including one this policy does not list.
#
# When settings.sensitive.prefer_message_encryption is true and the channel
# can encrypt the message, the notice is sent encrypted instead of
# portal-only: only the names are redacted.

sensitive if {
	categories := input.facts.sensitive_categories
	categories != null
	categories != []
}

sensitive if input.facts.has_sensitive_diagnosis != false

generic_provider_label if sensitive

requires_message_encryption if {
	sensitive
	settings.sensitive.prefer_message_encryption == true
	input.channel.encryption_available == true
	phi_capable_channel
}

# On the authenticated portal the patient is already where portal_only
# sends them: a sensitive notice shows there, with a generic provider label
# and the revealing fields redacted.
#
# A message encrypted for the patient's own key (S/MIME or OpenPGP) and
# signed by the plan (channel.security "message-encrypted") reaches only
# the patient too, whichever servers carry it: a sensitive notice goes
# there with the same detail as on the portal, where over TLS alone it
# goes portal-only.
encrypted_for_recipient if {
	input.channel.security == "message-encrypted"
	input.channel.message_encrypted == true
	phi_capable_channel
}

portal_only if {
	sensitive
	not requires_message_encryption
	not authenticated_portal
	not encrypted_for_recipient
}

redact contains field if {
	portal_only
	some field in phi_fields
}

redact contains field if {
	sensitive
	some field in settings.sensitive.revealing_fields
	field in fields
}

# ---------------------------------------------------------------------------
# Rule 4, patient rights.

# The patient opted out of this channel.
deny contains sprintf("the patient opted out of %s", [ch]) if {
	ch := channel_type
	ch in input.contact.opted_out_channels
}

# The patient's address bounced permanently as often as the suppression
# threshold allows (TIDINGS_BOUNCE_SUPPRESS_AFTER): no email goes to it
# until the contact is registered again. A tightening flag: it counts
# unless it is absent or false.
deny contains "the patient's email address is suppressed after repeated permanent bounces" if {
	channel_type == "email"
	input.contact.email_suppressed != false
}

# A confidential-communication address (HIPAA 45 CFR 164.522(b)): send there
# and nowhere else.
route_to_confidential_address if input.contact.has_confidential_address != false

# An agreed restriction names a notice type, or "all".
deny contains sprintf("the patient's restriction %q covers this notice", [restriction]) if {
	some restriction in input.contact.restrictions
	restriction in {"all", notice_type}
}

# Marketing needs the patient's authorization (HIPAA 45 CFR 164.508(a)(3)).
deny contains "purpose \"marketing\" needs the patient's authorization (contact.marketing_authorized is not true)" if {
	input.purpose == "marketing"
	not input.contact.marketing_authorized == true
}

# The patient unsubscribed from this purpose (the one-click link of a
# marketing mail, RFC 8058): no more notices of it. A required notice
# (payment, treatment, operations) offers no such link and is never denied
# by it.
deny contains sprintf("the patient unsubscribed from %s notices", [input.purpose]) if {
	is_string(input.purpose)
	input.purpose in input.contact.opted_out_purposes
}

# ---------------------------------------------------------------------------
# Rule 5, what an EOB notice is for: it tells a member about a processed claim.
# By default (data/settings.json) a preauthorization or predetermination is not
# announced as if it were a claim, and an EOB whose outcome is "error" is not
# notified at all.

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

# ---------------------------------------------------------------------------
# Helpers.

non_empty_string(value) if {
	is_string(value)
	trim_space(value) != ""
}
