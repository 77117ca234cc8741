package console

import (
	"context"
	"net/http"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
)

// AuditLog searches a tenant's audit rows; *store.Store is it.
type AuditLog interface {
	SearchAudit(ctx context.Context, tenant string, q audit.Query) ([]audit.Chained, error)
}

// ChainVerifier walks a tenant's audit chain and checks its checkpoints,
// as `tidings audit verify` does; *audit.Verifier is it.
type ChainVerifier interface {
	Verify(ctx context.Context, tenant string) (audit.Report, error)
}

// Page sizes: the console shows one screen of rows.
const (
	auditRows       = 200
	disclosureLimit = 500
)

var (
	auditAction  = regexp.MustCompile(`^[a-z0-9_.:-]{0,64}$`)
	auditSubject = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{0,128}$`)
)

// auditView is the audit page's data: the query as typed, the rows and
// the chain's verification when asked for.
type auditView struct {
	Action, SubjectType, SubjectID, From, To string
	Rows                                     []audit.Chained
	Verified                                 *audit.Report
	CanVerify                                bool
}

func (s *Server) auditPage(c *gin.Context) {
	if s.cfg.AuditLog == nil {
		s.unavailable(c, "The audit log")
		return
	}
	s.auditSearch(c, auditView{})
}

// auditAction searches or verifies, as the analyst pressed.
func (s *Server) auditAction(c *gin.Context) {
	if s.cfg.AuditLog == nil {
		s.unavailable(c, "The audit log")
		return
	}
	f := c.Request.PostForm
	av := auditView{Action: strings.TrimSpace(f.Get("action_prefix")), SubjectType: strings.TrimSpace(f.Get("subject_type")),
		SubjectID: strings.TrimSpace(f.Get("subject_id")), From: strings.TrimSpace(f.Get("from")), To: strings.TrimSpace(f.Get("to"))}
	if f.Get("do") == "verify" {
		if s.cfg.Chain == nil {
			s.renderAudit(c, http.StatusServiceUnavailable, "This process has no audit chain keys (TIDINGS_AUDIT_KEYS): run tidings audit verify instead.", av)
			return
		}
		rep, err := s.cfg.Chain.Verify(c.Request.Context(), principal(c).TenantID)
		if err != nil {
			s.fail(c, err)
			return
		}
		av.Verified = &rep
	}
	s.auditSearch(c, av)
}

func (s *Server) auditSearch(c *gin.Context, av auditView) {
	q := audit.Query{ActionPrefix: av.Action, SubjectType: av.SubjectType, SubjectID: av.SubjectID, Limit: auditRows}
	var err error
	if q.From, err = api.ParseDisclosureTime(av.From); err == nil {
		q.To, err = api.ParseDisclosureTime(av.To)
	}
	if err == nil && (!auditAction.MatchString(q.ActionPrefix) || !auditSubject.MatchString(q.SubjectType) || !auditSubject.MatchString(q.SubjectID)) {
		err = fault.New(fault.Invalid, "action, subject type and subject id are letters, digits and . _ : / - (at most 128)")
	}
	if err != nil {
		s.renderAudit(c, statusOf(err), fault.MessageOf(err), av)
		return
	}
	if av.Rows, err = s.cfg.AuditLog.SearchAudit(c.Request.Context(), principal(c).TenantID, q); err != nil {
		s.fail(c, err)
		return
	}
	s.renderAudit(c, http.StatusOK, "", av)
}

func (s *Server) renderAudit(c *gin.Context, status int, errMsg string, av auditView) {
	av.CanVerify = s.cfg.Chain != nil
	v := s.baseView(c, "Audit log")
	v.Current, v.Error, v.Data = "/audit", errMsg, av
	s.render(c, status, "audit", v)
}

// disclosuresView is the disclosures page's data. The patient is shown
// back in the form only: it goes in no URL and no log.
type disclosuresView struct {
	Patient, From, To string
	Asked             bool
	Disclosures       []api.DisclosureBody
	More              bool
}

func (s *Server) disclosuresPage(c *gin.Context) {
	s.renderDisclosures(c, http.StatusOK, "", disclosuresView{})
}

// disclosuresReport lists a patient's accounting of disclosures as GET
// /v1/disclosures does, the query posted rather than in the URL.
func (s *Server) disclosuresReport(c *gin.Context) {
	if s.cfg.Disclosures == nil {
		s.unavailable(c, "The accounting of disclosures")
		return
	}
	f := c.Request.PostForm
	dv := disclosuresView{Patient: strings.TrimSpace(f.Get("patient")), From: strings.TrimSpace(f.Get("from")), To: strings.TrimSpace(f.Get("to")), Asked: true}
	q, err := api.ParseDisclosureQuery(dv.Patient, dv.From, dv.To)
	q.TenantID, q.Limit = principal(c).TenantID, disclosureLimit
	if err != nil {
		s.renderDisclosures(c, statusOf(err), fault.MessageOf(err), dv)
		return
	}
	ds, next, err := s.cfg.Disclosures.Disclosures(c.Request.Context(), q)
	if err != nil {
		s.fail(c, err)
		return
	}
	for _, d := range ds {
		dv.Disclosures = append(dv.Disclosures, api.ToDisclosureBody(d))
	}
	dv.More = next.ID != 0
	s.renderDisclosures(c, http.StatusOK, "", dv)
}

func (s *Server) renderDisclosures(c *gin.Context, status int, errMsg string, dv disclosuresView) {
	v := s.baseView(c, "Accounting of disclosures")
	v.Current, v.Error, v.Data = "/disclosures", errMsg, dv
	s.render(c, status, "disclosures", v)
}
