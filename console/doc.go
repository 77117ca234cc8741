// Package console serves the web console under /console: a compliance
// analyst, an integration engineer or an operator signs in with an API key
// and sees, as plain HTML pages, what the key's role may see through the
// /v1 API (the policy playground, subscriptions and sources, the audit log
// and disclosures, workflows). It owns the pages' templates, the sign-in
// sessions (kept in memory, keyed by a cookie that never holds the key) and
// the role check of each page, which follows the API route that serves the
// same data. The data comes from the services the API uses, behind the
// interfaces declared here.
package console
