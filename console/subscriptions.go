package console

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/intake"
)

// Subscriptions lists a tenant's subscriptions, with their heartbeats and
// gaps, and its FHIR sources; *store.Store is it.
type Subscriptions interface {
	TenantReports(ctx context.Context, tenantID string) ([]intake.SubscriptionReport, error)
	TenantSources(ctx context.Context, tenantID string) ([]intake.Source, error)
}

// subscriptionsView is the subscriptions page's data.
type subscriptionsView struct {
	Subscriptions []api.SubscriptionReport
	Sources       []intake.Source
}

func (s *Server) subscriptionsPage(c *gin.Context) {
	if s.cfg.Subscriptions == nil {
		s.unavailable(c, "The subscription store")
		return
	}
	ctx, tenant := c.Request.Context(), principal(c).TenantID
	reports, err := s.cfg.Subscriptions.TenantReports(ctx, tenant)
	if err != nil {
		s.fail(c, err)
		return
	}
	sources, err := s.cfg.Subscriptions.TenantSources(ctx, tenant)
	if err != nil {
		s.fail(c, err)
		return
	}
	d := subscriptionsView{Sources: sources}
	for _, r := range reports {
		d.Subscriptions = append(d.Subscriptions, api.ToSubscriptionReport(r))
	}
	v := s.baseView(c, "Subscriptions and sources")
	v.Current, v.Data = "/subscriptions", d
	s.render(c, http.StatusOK, "subscriptions", v)
}
