// Package seal owns envelope encryption of PHI at rest outside Postgres' clear
// columns: Asynq task payloads, sealed resource and contact columns. Every
// ciphertext is AES-256-GCM and names, in a clear header, its format version
// and the key that sealed it; new values are sealed with the primary key,
// which configuration names (never guessed from the ids' order).
//
// A value is bound to its Place (tenant, table, column and the row's key)
// through the AEAD's associated data, encoded with length prefixes in one
// place (Place.ad): copied to another row, column or tenant it fails to open
// with ErrCorrupt. Values of format version 1, bound only to a context
// string, still open; `tidings keys rotate` re-seals them (and values under
// an old key) in the current format, after which the old key can be removed.
//
// Blind indexes (IndexKeys) are keyed hashes of lookup values, per tenant:
// each tenant's key of a version is derived with HKDF from the configured
// key of that version, and an index names its version ("v2:…"), so lookups
// probe every configured version during a rotation and `tidings keys
// reindex` rewrites old rows to the current one. Version 0 is the global,
// unprefixed index of earlier releases, probed with version 1's key.
package seal
