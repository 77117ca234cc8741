package links

import (
	"context"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/webpage"
	"github.com/tidings-health/tidings/workflow"
)

// Store records what the links do; store.Store implements it.
type Store interface {
	// Unsubscribe opts the patient a tenant's notice went to out of
	// purpose, records an "unsubscribed" engagement and an audit row;
	// added is false when the patient had already opted out.
	Unsubscribe(ctx context.Context, tenantID string, noticeID int64, purpose string, now time.Time) (added bool, wakes []journey.Wake, err error)
	// RecordNoticeEngagement records "opened" or "clicked" for a tenant's
	// notice and returns the runs to wake.
	RecordNoticeEngagement(ctx context.Context, tenantID string, noticeID int64, eventType string, now time.Time) ([]journey.Wake, error)
}

// Waker hands woken runs to the queue; *journey.Engine is it.
type Waker interface {
	Wake(ctx context.Context, wakes []journey.Wake)
}

// maxFormBytes bounds the one-click POST body: "List-Unsubscribe=One-Click".
const maxFormBytes = 1 << 10

// Server answers the links of package links under /u/ and /t/.
type Server struct {
	Signer *Signer
	Store  Store
	Waker  Waker
	Log    *slog.Logger
	Now    func() time.Time
}

// Mount adds the routes to r. The access log records them by route
// template, so a token never reaches a log.
func (s *Server) Mount(r gin.IRouter) {
	r.GET(unsubscribePath+":token", s.unsubscribePage)
	r.POST(unsubscribePath+":token", s.unsubscribe)
	r.GET(openPath+":token", s.open)
	r.GET(clickPath+":token", s.click)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// verify reads the route's token of kind, answering the request itself
// when it is not good: 404 for one that is malformed or forged (a guess
// learns nothing), 410 for one that expired.
func (s *Server) verify(c *gin.Context, kind byte) (Token, bool) {
	t, err := s.Signer.Verify(c.Param("token"), kind, s.now())
	switch {
	case err == nil:
		return t, true
	case errors.Is(err, ErrExpired):
		s.page(c, http.StatusGone, pageExpired, "")
	default:
		s.page(c, http.StatusNotFound, pageUnknown, "")
	}
	return Token{}, false
}

// unsubscribePage shows a button that unsubscribes; the GET itself never
// does, since mail scanners follow links.
func (s *Server) unsubscribePage(c *gin.Context) {
	if _, ok := s.verify(c, KindUnsubscribe); !ok {
		return
	}
	s.page(c, http.StatusOK, pageConfirm, c.Request.URL.Path)
}

// unsubscribe is the RFC 8058 one-click POST (the mail client's, or the
// page's button): the body is the form List-Unsubscribe=One-Click.
func (s *Server) unsubscribe(c *gin.Context) {
	t, ok := s.verify(c, KindUnsubscribe)
	if !ok {
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxFormBytes)
	if err := c.Request.ParseForm(); err != nil || c.Request.PostForm.Get("List-Unsubscribe") != "One-Click" {
		s.page(c, http.StatusBadRequest, pageBadForm, "")
		return
	}
	if !workflow.OffersUnsubscribe(t.Purpose) {
		s.page(c, http.StatusNotFound, pageUnknown, "")
		return
	}
	ctx := c.Request.Context()
	added, wakes, err := s.Store.Unsubscribe(ctx, t.TenantID, t.NoticeID, t.Purpose, s.now())
	switch {
	case errors.Is(err, fault.NotFound):
		s.page(c, http.StatusNotFound, pageUnknown, "")
		return
	case err != nil:
		s.log().Error("unsubscribe not recorded", "tenant", t.TenantID, "notice_id", t.NoticeID, "err", err)
		s.page(c, http.StatusServiceUnavailable, pageRetry, "")
		return
	}
	if s.Waker != nil {
		s.Waker.Wake(ctx, wakes)
	}
	s.log().Info("unsubscribed", "tenant", t.TenantID, "notice_id", t.NoticeID, "purpose", t.Purpose, "new", added)
	s.page(c, http.StatusOK, pageDone, "")
}

// pixel is a transparent 1×1 GIF.
var pixel = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

func (s *Server) open(c *gin.Context) {
	if _, ok := s.track(c, KindOpen, workflow.EngagementOpened); ok {
		c.Data(http.StatusOK, "image/gif", pixel)
	}
}

// click records the click and sends the patient on to the link the notice
// carried, signed into the token: never anywhere else.
func (s *Server) click(c *gin.Context) {
	if t, ok := s.track(c, KindClick, workflow.EngagementClicked); ok {
		c.Header("Referrer-Policy", "no-referrer")
		c.Redirect(http.StatusFound, t.Target)
	}
}

// track verifies a tracking link's token and records its engagement.
func (s *Server) track(c *gin.Context, kind byte, eventType string) (Token, bool) {
	t, ok := s.verify(c, kind)
	if ok {
		s.record(c, t, eventType)
		c.Header("Cache-Control", "no-store")
	}
	return t, ok
}

// record records an engagement; a failure is logged and the patient still
// gets the pixel or the page they asked for.
func (s *Server) record(c *gin.Context, t Token, eventType string) {
	ctx := c.Request.Context()
	wakes, err := s.Store.RecordNoticeEngagement(ctx, t.TenantID, t.NoticeID, eventType, s.now())
	if err != nil {
		if !errors.Is(err, fault.NotFound) {
			s.log().Error("engagement not recorded", "type", eventType, "tenant", t.TenantID, "notice_id", t.NoticeID, "err", err)
		}
		return
	}
	if s.Waker != nil {
		s.Waker.Wake(ctx, wakes)
	}
}

// Pages the unsubscribe link shows.
const (
	pageConfirm = iota
	pageDone
	pageExpired
	pageUnknown
	pageBadForm
	pageRetry
)

var pageTexts = map[int]struct{ title, body string }{
	pageConfirm: {"Unsubscribe", "Stop receiving these messages? Notices you need about your care and coverage will still be sent."},
	pageDone:    {"You are unsubscribed", "You will not receive these messages any more. Notices you need about your care and coverage will still be sent."},
	pageExpired: {"This link has expired", "Use the link in a more recent message, or contact us."},
	pageUnknown: {"This link is not valid", "Check that the whole link was copied, or contact us."},
	pageBadForm: {"Nothing was changed", "Use the Unsubscribe button on this page."},
	pageRetry:   {"Please try again", "We could not record your choice just now. Please try again in a few minutes."},
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;background:#fff}
button{font-size:1rem;padding:.6rem 1.2rem;color:#fff;background:#1d4ed8;border:0;border-radius:.3rem}</style></head>
<body><main><h1>{{.Title}}</h1><p>{{.Body}}</p>
{{if .Action}}<form method="post" action="{{.Action}}"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>{{end}}</main></body></html>
`))

// page answers with one of the pages; action is where its button posts.
// No page shows anything about the patient or the notice.
func (s *Server) page(c *gin.Context, status, which int, action string) {
	p := pageTexts[which]
	if err := webpage.Write(c, status, pageTemplate, struct{ Title, Body, Action string }{p.title, p.body, action}); err != nil {
		s.log().Error("link page did not render", "page", which, "err", err)
	}
	c.Abort()
}
