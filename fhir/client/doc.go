// Package client is Tidings' FHIR R4 REST client: it fetches what a
// subscription notification did not carry (reads, version reads, searches and
// the Subscriptions Backport $events operation) from the subscription's FHIR
// server, authenticated with a static bearer token or SMART Backend Services.
//
// Everything it sends and receives is bounded: https only (plain http only on
// loopback), redirects only to the same scheme and host, response bodies capped
// and required to be JSON, retries with exponential backoff and jitter on 5xx,
// 429 and network errors (honouring Retry-After), one token refresh on a 401.
// Errors name the method, the URL path (never the query string, which can
// carry patient ids), and the status; never a response body, a token or a
// client assertion. Callers branch on the sentinel errors (ErrGone, ...).
//
// The SMART client assertion (RFC 7523 private_key_jwt, RS384 or ES384) is
// signed with the standard library only (crypto/rsa PKCS #1 v1.5 and
// crypto/ecdsa with SHA-384, the ECDSA signature re-encoded from ASN.1 to the
// JWS fixed-width r||s form), so no JWT module is needed for one header, six
// claims and two algorithms.
package client
