package notify

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
)

// MaxDSNBytes bounds a delivery status notification ParseDSN reads: a
// report is a few kilobytes, and the returned message it may carry is
// cut here rather than read whole.
const MaxDSNBytes = 256 << 10

// ErrNotDSN means a message is not a delivery status notification
// (RFC 3464: multipart/report with report-type delivery-status and at
// least one recipient's status), or is one too malformed to read.
var ErrNotDSN = errors.New("notify: not a delivery status notification")

// Bounce is what a delivery status notification says about the message
// it reports on. It never holds an address: a report names its
// recipients, and those are PHI, so ParseDSN counts them and keeps only
// each one's action and status.
type Bounce struct {
	// MessageID is the reported message's Message-ID with its angle
	// brackets, as the report quotes it in the returned message or its
	// headers; "" when the report returns neither.
	MessageID string
	// Action is the most serious recipient action: "failed", then
	// "delayed", then "delivered", "relayed" or "expanded".
	Action string
	// Status is that recipient's status code (RFC 3463, "5.1.1"); "" when
	// it gave none that parses.
	Status string
	// Hard is a permanent failure: a recipient whose action is failed
	// with a 5.x.x status. A failure with a 4.x.x status, or a delay, is
	// soft: the relay may still deliver, or a later notice may.
	Hard bool
	// Recipients is how many recipients the report has a status for.
	Recipients int
}

// statusCode is an RFC 3463 status: class 2, 4 or 5, subject, detail.
var statusCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// actionRank orders the actions a report gives, most serious first.
var actionRank = map[string]int{"failed": 5, "delayed": 4, "delivered": 3, "relayed": 2, "expanded": 1}

// ParseDSN reads a delivery status notification as a relay sends it to
// the envelope sender: a multipart/report whose message/delivery-status
// part has one block of fields per recipient, usually followed by the
// returned message (message/rfc822) or its headers
// (text/rfc822-headers). Its errors wrap ErrNotDSN and never quote the
// message.
func ParseDSN(raw []byte) (Bounce, error) {
	var b Bounce
	if len(raw) > MaxDSNBytes {
		return b, fmt.Errorf("%w: larger than %d bytes", ErrNotDSN, MaxDSNBytes)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return b, fmt.Errorf("%w: the message header does not parse", ErrNotDSN)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") || params["boundary"] == "" {
		return b, fmt.Errorf("%w: not multipart/report with report-type delivery-status", ErrNotDSN)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	sawStatus := false
	for parts := 0; ; parts++ {
		if parts == 16 {
			return b, fmt.Errorf("%w: more than 16 parts", ErrNotDSN)
		}
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A returned message cut short (or a missing final boundary)
			// leaves what was read so far, which is the report proper.
			if sawStatus {
				break
			}
			return b, fmt.Errorf("%w: the multipart body does not parse", ErrNotDSN)
		}
		body, err := partBody(part)
		if err != nil {
			return b, err
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch ct {
		case "message/delivery-status", "message/global-delivery-status":
			if sawStatus {
				return b, fmt.Errorf("%w: more than one delivery-status part", ErrNotDSN)
			}
			sawStatus = true
			if err := readStatusFields(body, &b); err != nil {
				return b, err
			}
		case "message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers":
			if b.MessageID == "" {
				b.MessageID = returnedMessageID(body)
			}
		}
	}
	if !sawStatus || b.Recipients == 0 {
		return Bounce{}, fmt.Errorf("%w: no recipient status", ErrNotDSN)
	}
	return b, nil
}

// partBody reads a part, at most MaxDSNBytes, decoding base64 and
// quoted-printable.
func partBody(p *multipart.Part) (io.Reader, error) {
	var r io.Reader = io.LimitReader(p, MaxDSNBytes)
	switch strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding"))) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, newlineStripper{r})
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: a part's transfer encoding does not decode", ErrNotDSN)
	}
	return bytes.NewReader(raw), nil
}

// readStatusFields reads a delivery-status body: the per-message fields,
// then one block of per-recipient fields each, blocks separated by blank
// lines, and keeps the most serious action.
func readStatusFields(body io.Reader, b *Bounce) error {
	tp := textproto.NewReader(bufio.NewReader(body))
	if _, err := tp.ReadMIMEHeader(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the per-message fields do not parse", ErrNotDSN)
	}
	for blocks := 0; ; blocks++ {
		if blocks == 1000 {
			return fmt.Errorf("%w: more than 1000 recipient blocks", ErrNotDSN)
		}
		h, err := tp.ReadMIMEHeader()
		if len(h) > 0 {
			action := strings.ToLower(strings.TrimSpace(h.Get("Action")))
			if _, known := actionRank[action]; !known {
				return fmt.Errorf("%w: a recipient block has no known Action", ErrNotDSN)
			}
			b.Recipients++
			// Status may carry a comment: "5.1.1 (user unknown)".
			status, _, _ := strings.Cut(strings.TrimSpace(h.Get("Status")), " ")
			if !statusCode.MatchString(status) {
				status = ""
			}
			if actionRank[action] > actionRank[b.Action] || (action == b.Action && status > b.Status) {
				b.Action, b.Status = action, status
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: a recipient block does not parse", ErrNotDSN)
		}
	}
	b.Hard = b.Action == "failed" && strings.HasPrefix(b.Status, "5.")
	return nil
}

// messageIDPattern is a Message-ID as Tidings writes them and as most
// mail software does: <local@domain>, with no spaces.
var messageIDPattern = regexp.MustCompile(`^<[^<>\s@]{1,200}@[^<>\s@]{1,200}>$`)

// returnedMessageID is the Message-ID header of a returned message or
// its headers, or "".
func returnedMessageID(body io.Reader) string {
	h, err := textproto.NewReader(bufio.NewReader(body)).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	id := strings.TrimSpace(h.Get("Message-Id"))
	if !messageIDPattern.MatchString(id) {
		return ""
	}
	return id
}

// newlineStripper drops CR and LF, which base64 bodies wrap at.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, c := range p[:k] {
			if c != '\r' && c != '\n' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
