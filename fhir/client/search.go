package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Search runs GET [base]/{resourceType}?params and follows the searchset
// Bundle's link[relation=next] across pages (same scheme and host as the base
// only, else ErrForeignReference). It returns the entries' resources in
// server order: the matches and also any _include/_revinclude resources
// (search.mode "include"), which callers tell apart by resourceType;
// "outcome" entries (OperationOutcome warnings) are dropped.
//
// At most Options.MaxPages pages and Options.MaxEntries resources are
// collected. When a limit is reached, or a page fails after others
// succeeded, Search returns what it has together with the error (wrapping
// ErrTruncated when a limit was hit), so a caller can process a partial
// result knowingly.
func (c *Client) Search(ctx context.Context, resourceType string, params url.Values) ([]json.RawMessage, error) {
	if !validType(resourceType) {
		return nil, fmt.Errorf("%w: resource type malformed", ErrInvalidReference)
	}
	u := c.resourceURL(resourceType)
	u.RawQuery = params.Encode()
	var out []json.RawMessage
	seen := map[string]bool{}
	for page := 1; ; page++ {
		seen[u.String()] = true
		res, err := c.get(ctx, u)
		if err != nil {
			return out, err
		}
		if res.status != http.StatusOK {
			return out, res.statusError(nil)
		}
		entries, next, err := decodeSearchBundle(res.body)
		if err != nil {
			return out, &opError{method: http.MethodGet, path: templatePath(u.Path), what: err.Error(), err: err}
		}
		if room := c.maxEntries - len(out); len(entries) > room {
			out = append(out, entries[:room]...)
			return out, fmt.Errorf("%w: more than %d resources", ErrTruncated, c.maxEntries)
		}
		out = append(out, entries...)
		if next == "" {
			return out, nil
		}
		if page >= c.maxPages {
			return out, fmt.Errorf("%w: more than %d pages", ErrTruncated, c.maxPages)
		}
		nu, err := u.Parse(next)
		if err != nil || (nu.Scheme != "http" && nu.Scheme != "https") {
			return out, &opError{method: http.MethodGet, path: templatePath(u.Path), what: "next link is not a valid URL", err: ErrInvalidResponse}
		}
		if nu.User != nil || !sameOrigin(c.base, nu) {
			return out, &opError{method: http.MethodGet, path: templatePath(u.Path), what: "next link points to another host", err: ErrForeignReference}
		}
		nu.Fragment, nu.RawFragment = "", ""
		if seen[nu.String()] {
			return out, &opError{method: http.MethodGet, path: templatePath(u.Path), what: "next link repeats an earlier page", err: ErrInvalidResponse}
		}
		u = nu
	}
}

// decodeSearchBundle reads a searchset Bundle: its entry resources (without
// "outcome" entries) and its first next link. Messages name fields only.
func decodeSearchBundle(body []byte) ([]json.RawMessage, string, error) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Link         []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		} `json:"link"`
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
			Search   *struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, "", fmt.Errorf("%w: search Bundle: field %s has the wrong JSON type", ErrInvalidResponse, te.Field)
		}
		return nil, "", fmt.Errorf("%w: search Bundle is not valid JSON", ErrInvalidResponse)
	}
	if b.ResourceType != "Bundle" {
		return nil, "", fmt.Errorf("%w: resourceType is not Bundle", ErrInvalidResponse)
	}
	if b.Type != "searchset" {
		return nil, "", fmt.Errorf("%w: Bundle.type is not searchset", ErrInvalidResponse)
	}
	var next string
	for _, l := range b.Link {
		if l.Relation == "next" {
			if l.URL == "" {
				return nil, "", fmt.Errorf("%w: Bundle.link next has no url", ErrInvalidResponse)
			}
			next = l.URL
			break
		}
	}
	out := make([]json.RawMessage, 0, len(b.Entry))
	for i, e := range b.Entry {
		if e.Search != nil && e.Search.Mode == "outcome" {
			continue
		}
		if len(e.Resource) == 0 || string(e.Resource) == "null" {
			continue
		}
		if e.Resource[0] != '{' {
			return nil, "", fmt.Errorf("%w: Bundle.entry[%d].resource is not an object", ErrInvalidResponse, i)
		}
		out = append(out, e.Resource)
	}
	return out, next, nil
}
