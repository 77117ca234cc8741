package console

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// pages are the console's pages, in the order the navigation lists them.
var pages = []page{
	{Path: "/policy", Title: "Policy playground", APIRoute: "POST /policy/evaluate",
		About: "try a candidate policy on a sample input, run its tests, compare it with the active revision and submit it",
		mount: func(g *gin.RouterGroup, s *Server) {
			g.GET("/policy", s.signedIn, allow(s, apiRole("POST /policy/evaluate")), s.policyPage)
			g.POST("/policy", s.signedIn, allow(s, apiRole("POST /policy/evaluate")), s.policyAction)
		}},
	{Path: "/subscriptions", Title: "Subscriptions", APIRoute: "GET /subscriptions/:id",
		About: "each subscription's status, last heartbeat and gaps, and the FHIR sources",
		mount: func(g *gin.RouterGroup, s *Server) {
			g.GET("/subscriptions", s.signedIn, allow(s, apiRole("GET /subscriptions/:id")), s.subscriptionsPage)
		}},
}

// unavailable answers for a page whose service this process lacks.
func (s *Server) unavailable(c *gin.Context, what string) {
	v := s.baseView(c, "Unavailable")
	v.Error = what + " is not available in this process."
	s.render(c, http.StatusServiceUnavailable, "message", v)
}
