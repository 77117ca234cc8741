// Package audit owns the evidence value of the audit log: the chainer that
// links each tenant's audit rows, after their transactions have committed,
// into a keyed hash chain; the signed checkpoints of that chain, kept in the
// database and in files outside it; and the verification and export an
// auditor runs.
//
// Business transactions only insert audit rows (store.Audit); nothing they
// do waits for the chain. The chain order is (xid, id): xid is the top-level
// id of the transaction that inserted the row. The chainer takes only rows
// whose xid is below its snapshot's xmin, so every transaction that could
// still add a row before them has ended, and the order of the rows it chains
// never changes.
//
// The bytes behind each link, for anyone re-implementing the check:
//
//	hash(seq) = HMAC-SHA-256(key[key_id], hash(seq-1) ‖ be64(seq) ‖ row)
//	hash(0)   = 32 zero bytes
//	row       = field(id) ‖ field(tenant) ‖ field(at) ‖ field(actor) ‖ field(action) ‖
//	            field(subject type) ‖ field(subject id) ‖ field(detail) ‖ field(xid)
//	field(s)  = be32(len(s)) ‖ s
//
// where id and xid are decimal, at is RFC 3339 with nanoseconds in UTC and
// detail is the JSON object with its keys sorted, as encoding/json writes it.
// A checkpoint is an Ed25519 signature over CheckpointText.
package audit
