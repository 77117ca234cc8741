package main

import (
	"bytes"
	"context"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	portalTokenRE = regexp.MustCompile(`/portal/[^/\s]+/notices/([A-Za-z0-9_-]+)`)
	// 128 random bits in hex at the sender's domain: the only shape a
	// Message-ID may have, so it cannot carry a token, an id or a name.
	randomMessageIDRE = regexp.MustCompile(`^<[0-9a-f]{32}@tidings\.invalid>$`)
)

// The Message-ID passes through every relay's logs and is kept in
// deliveries.message_id: it carries neither the portal token (which opens
// the notice) nor the notice id, on the one-at-a-time and the batch path.
func TestMessageIDCarriesNoTokenNorNoticeID(t *testing.T) {
	for _, path := range []string{"single", "batch"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			ts := newTestStack(t, testOpts{DeferWorker: path == "batch"})
			files := batchEOBs[:3]
			for _, f := range files {
				if r := ts.notify(t, ts.wrap(t, fixture(t, f))); r.Status != 202 {
					t.Fatalf("%s: %d %s", f, r.Status, r.Body)
				}
			}
			if path == "batch" {
				if err := ts.StartWorker(); err != nil {
					t.Fatal(err)
				}
			}
			msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), len(files))
			if err != nil {
				t.Fatal(err)
			}
			ts.waitSettled(t)
			var rows []struct {
				NoticeID    int64
				PortalToken string
				MessageID   string
			}
			if err := ts.app.store.RawScan(context.Background(), &rows, `SELECT n.id AS notice_id, n.portal_token, d.message_id
				FROM notices n JOIN deliveries d ON d.notice_id = n.id WHERE d.status = 'sent' ORDER BY n.id`); err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(files) {
				t.Fatalf("%d sent deliveries, want %d", len(rows), len(files))
			}
			stored := map[string]bool{}
			for _, r := range rows {
				stored[r.MessageID] = true
				if !randomMessageIDRE.MatchString(r.MessageID) || strings.Contains(r.MessageID, r.PortalToken) {
					t.Errorf("notice %d: deliveries.message_id %q is not a random id (token %q)", r.NoticeID, r.MessageID, r.PortalToken)
				}
			}
			seen := map[string]bool{}
			for i, m := range msgs {
				hdr, err := mail.ReadMessage(bytes.NewReader(m.Data))
				if err != nil {
					t.Fatal(err)
				}
				id := hdr.Header.Get("Message-Id")
				tok := portalTokenRE.FindStringSubmatch(decodedText(t, m.Data))
				if tok == nil {
					t.Fatalf("message %d has no portal link", i)
				}
				if strings.Contains(id, tok[1]) {
					t.Errorf("message %d: Message-ID %q carries the portal token", i, id)
				}
				if !randomMessageIDRE.MatchString(id) {
					t.Errorf("message %d: Message-ID %q is not 128 random bits at the sender's domain", i, id)
				}
				for _, r := range rows {
					local := strings.TrimSuffix(strings.TrimPrefix(id, "<"), "@tidings.invalid>")
					if local == strconv.FormatInt(r.NoticeID, 10) || strings.Contains(id, "notice") {
						t.Errorf("message %d: Message-ID %q names notice %d", i, id, r.NoticeID)
					}
				}
				if seen[id] {
					t.Errorf("Message-ID %q sent twice", id)
				}
				seen[id] = true
				if !stored[id] {
					t.Errorf("message %d: Message-ID %q is not the one in deliveries.message_id", i, id)
				}
			}
		})
	}
}
