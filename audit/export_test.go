package audit

import "context"

// SetBeforeCommit makes c call f after writing a batch, before committing
// it, so a test can stop a chainer there.
func SetBeforeCommit(c *Chainer, f func(ctx context.Context)) { c.beforeCommit = f }
