//go:build !linux

package policy

import "time"

// limitProcess has no hard caps outside Linux: the soft heap limit and the
// parent's kill at the deadline are all there is.
func limitProcess(int64, time.Duration) error { return nil }
