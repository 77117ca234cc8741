package console

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// pages are the console's pages, in the order the navigation lists them.
var pages = []page{
	{Path: "/policy", Title: "Policy playground", APIRoute: "POST /policy/evaluate",
		About: "try a candidate policy on a sample input, run its tests, compare it with the active revision and submit it",
		mount: func(g gin.IRoutes, s *Server) {
			g.GET("/policy", s.policyPage)
			g.POST("/policy", s.policyAction)
		}},
	{Path: "/subscriptions", Title: "Subscriptions", APIRoute: "GET /subscriptions/:id",
		About: "each subscription's status, last heartbeat and gaps, and the FHIR sources",
		mount: func(g gin.IRoutes, s *Server) {
			g.GET("/subscriptions", s.subscriptionsPage)
		}},
	// The audit log has no /v1 route; its readers are those of the other
	// auditor's report, the accounting of disclosures.
	{Path: "/audit", Title: "Audit log", APIRoute: "POST /disclosures/search",
		About: "search the tenant's audit rows and verify its hash chain and signed checkpoints",
		mount: func(g gin.IRoutes, s *Server) {
			g.GET("/audit", s.auditPage)
			g.POST("/audit", s.auditAction)
		}},
	{Path: "/disclosures", Title: "Disclosures", APIRoute: "POST /disclosures/search",
		About: "a patient's accounting of disclosures",
		mount: func(g gin.IRoutes, s *Server) {
			g.GET("/disclosures", s.disclosuresPage)
			g.POST("/disclosures", s.disclosuresReport)
		}},
	{Path: "/workflows", Title: "Workflows", APIRoute: "GET /workflows/:id/stats",
		About: "each workflow as a step diagram with the runs at each step, and a subject's path through it",
		mount: func(g gin.IRoutes, s *Server) {
			g.GET("/workflows", s.workflowsPage)
			g.GET("/workflows/:id", s.workflowPage)
			g.POST("/workflows/:id", s.workflowRuns)
		}},
}

// unavailable answers for a page whose service this process lacks.
func (s *Server) unavailable(c *gin.Context, what string) {
	v := s.baseView(c, "Unavailable")
	v.Error = what + " is not available in this process."
	s.render(c, http.StatusServiceUnavailable, "message", v)
}
