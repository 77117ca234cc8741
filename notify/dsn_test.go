package notify

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// dsn builds a report as a relay writes one: the human-readable part, the
// delivery-status part (per-message fields, then one block per
// recipient) and the returned message's headers.
func dsn(statusPart, returned string) string {
	msg := "From: MAILER-DAEMON@relay.example.org\r\n" +
		"To: bounces@plan.example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"B0UND\"\r\n" +
		"\r\n" +
		"--B0UND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" +
		"This is the mail system at host relay.example.org.\r\n\r\n" +
		"--B0UND\r\n" + statusPart
	if returned != "" {
		msg += "--B0UND\r\nContent-Type: text/rfc822-headers\r\n\r\n" + returned
	}
	return msg + "--B0UND--\r\n"
}

const returnedHeaders = "Message-ID: <4f1c2a9e8b7d@plan.example.org>\r\n" +
	"From: Plan <notices@plan.example.org>\r\n" +
	"To: member@example.com\r\n" +
	"Subject: Your claim was processed\r\n\r\n"

func statusPart(blocks ...string) string {
	s := "Content-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; relay.example.org\r\n" +
		"Arrival-Date: Mon, 7 Dec 2026 05:40:00 +0000\r\n"
	for _, b := range blocks {
		s += "\r\n" + b
	}
	return s + "\r\n"
}

const (
	failedUnknownUser = "Final-Recipient: rfc822; member@example.com\r\n" +
		"Original-Recipient: rfc822;member@example.com\r\n" +
		"Action: failed\r\n" +
		"Status: 5.1.1\r\n" +
		"Remote-MTA: dns; mx.example.com\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <member@example.com>: Recipient address rejected\r\n"
	delayedFull = "Final-Recipient: rfc822; member@example.com\r\n" +
		"Action: delayed\r\n" +
		"Status: 4.2.2 (mailbox full)\r\n"
	failedTemporary = "Final-Recipient: rfc822; member@example.com\r\n" +
		"Action: failed\r\n" +
		"Status: 4.4.7\r\n"
	delivered = "Final-Recipient: rfc822; other@example.com\r\n" +
		"Action: delivered\r\n" +
		"Status: 2.0.0\r\n"
)

func TestParseDSN(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("Reporting-MTA: dns; relay.example.org\r\n\r\n" + failedUnknownUser))
	for _, c := range []struct {
		name string
		raw  string
		want Bounce
	}{
		{"hard bounce", dsn(statusPart(failedUnknownUser), returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "failed", Status: "5.1.1", Hard: true, Recipients: 1}},
		{"delay with a comment after the status", dsn(statusPart(delayedFull), returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "delayed", Status: "4.2.2", Recipients: 1}},
		{"a failure with a temporary status is soft", dsn(statusPart(failedTemporary), returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "failed", Status: "4.4.7", Recipients: 1}},
		{"the worst of two recipients", dsn(statusPart(delivered, failedUnknownUser), returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "failed", Status: "5.1.1", Hard: true, Recipients: 2}},
		{"a success report", dsn(statusPart(delivered), returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "delivered", Status: "2.0.0", Recipients: 1}},
		{"no returned headers", dsn(statusPart(failedUnknownUser), ""),
			Bounce{Action: "failed", Status: "5.1.1", Hard: true, Recipients: 1}},
		{"a base64 delivery-status part", dsn("Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"+b64+"\r\n", returnedHeaders),
			Bounce{MessageID: "<4f1c2a9e8b7d@plan.example.org>", Action: "failed", Status: "5.1.1", Hard: true, Recipients: 1}},
		{"a returned Message-ID that is not one is dropped", dsn(statusPart(failedUnknownUser), "Message-ID: not an id\r\n\r\n"),
			Bounce{Action: "failed", Status: "5.1.1", Hard: true, Recipients: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseDSN([]byte(c.raw))
			if err != nil {
				t.Fatalf("ParseDSN: %v", err)
			}
			if got != c.want {
				t.Errorf("ParseDSN = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseDSNRefuses(t *testing.T) {
	plain := "From: a@example.com\r\nTo: b@example.com\r\nSubject: hello member@example.com\r\n\r\nJust a message.\r\n"
	for name, raw := range map[string]string{
		"an ordinary message": plain,
		"another report type": strings.Replace(dsn(statusPart(failedUnknownUser), returnedHeaders), "report-type=delivery-status", "report-type=disposition-notification", 1),
		"no recipient block":  dsn(statusPart(), returnedHeaders),
		"an unknown action":   dsn(statusPart(strings.Replace(failedUnknownUser, "Action: failed", "Action: exploded", 1)), returnedHeaders),
		"two status parts":    dsn(statusPart(failedUnknownUser)+"--B0UND\r\n"+statusPart(delivered), returnedHeaders),
		"too large":           dsn(statusPart(failedUnknownUser), returnedHeaders+strings.Repeat("x", MaxDSNBytes)),
		"not a message":       "\x00\x01garbage",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseDSN([]byte(raw))
			if !errors.Is(err, ErrNotDSN) {
				t.Fatalf("ParseDSN = %v, want ErrNotDSN", err)
			}
			if strings.Contains(err.Error(), "member@example.com") || strings.Contains(err.Error(), "claim") {
				t.Errorf("the error quotes the message: %v", err)
			}
		})
	}
}

// FuzzParseDSN: any input gives a bounce with a valid action and status,
// or ErrNotDSN; never a panic, and never an address in the result.
func FuzzParseDSN(f *testing.F) {
	f.Add([]byte(dsn(statusPart(failedUnknownUser), returnedHeaders)))
	f.Add([]byte(dsn(statusPart(delivered, delayedFull), "")))
	f.Add([]byte(dsn("Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nReporting-MTA: dns; r=\r\n\r\nAction: failed\r\nStatus: 5.=\r\n1.1\r\n", returnedHeaders)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ParseDSN(raw)
		if err != nil {
			if !errors.Is(err, ErrNotDSN) {
				t.Fatalf("error %v does not wrap ErrNotDSN", err)
			}
			return
		}
		if _, ok := actionRank[b.Action]; !ok || b.Recipients == 0 {
			t.Fatalf("bounce %+v", b)
		}
		if b.Status != "" && !statusCode.MatchString(b.Status) {
			t.Fatalf("status %q", b.Status)
		}
		if b.Hard != (b.Action == "failed" && strings.HasPrefix(b.Status, "5.")) {
			t.Fatalf("hard %+v", b)
		}
		if b.MessageID != "" && !messageIDPattern.MatchString(b.MessageID) {
			t.Fatalf("message id %q", b.MessageID)
		}
	})
}
