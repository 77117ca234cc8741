// Package links owns the links Tidings puts in a mail besides the portal's:
// the one-click unsubscribe link of a marketing notice (RFC 8058) and, for
// workflows that ask for it, the open pixel and click redirects. Each link
// is a token signed with HMAC-SHA256 that names the tenant, the notice and
// what the link does, and expires; it carries no PHI. The Server answers
// them: it sets opt-outs and records the unsubscribed, opened and clicked
// engagements that wait_event steps see.
package links
