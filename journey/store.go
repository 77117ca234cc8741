package journey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tidings-health/tidings/workflow"
)

// Store is what the journey core needs from storage; store.Store
// implements it, converting its rows to these types.
type Store interface {
	// Events.
	LoadEvent(ctx context.Context, id int64) (*Event, error)
	// PreviousAppliedEvent and LatestEventID look among the events of one
	// source (Event.Source): another source's resource with the same id is
	// another resource.
	PreviousAppliedEvent(ctx context.Context, tenantID, source, resourceType, resourceID string, eventID int64) (*Event, error)
	LatestEventID(ctx context.Context, tenantID, source, resourceType, resourceID string) (int64, error)
	SetEventKind(ctx context.Context, eventID int64, kind string) error
	MarkSuperseded(ctx context.Context, eventID int64) error
	// CloseEvent records an event that leads to no run: its notice (of the
	// type) gets the outcome with the reason, unless it already has one.
	CloseEvent(ctx context.Context, ev *Event, noticeType string, outcome Outcome, reason string) error
	// WithSubjectLock runs fn holding a lock on one subject of a source, in
	// any replica; it reports false without running fn when another holds it.
	WithSubjectLock(ctx context.Context, tenantID, source, subject string, fn func() error) (bool, error)

	// Workflows.
	ActiveWorkflows(ctx context.Context, tenantID, triggerKey string) ([]Workflow, error)
	Workflow(ctx context.Context, tenantID, id string) (Workflow, error)
	WorkflowVersion(ctx context.Context, tenantID, id string, version int) (workflow.Definition, error)

	// Runs.
	StartRun(ctx context.Context, r NewRun, now time.Time) (Wake, bool, error)
	LoadRun(ctx context.Context, id int64) (Run, error)
	SaveRun(ctx context.Context, r Run, st workflow.State, actions []workflow.Action, cursor int64, now time.Time) (Wake, error)
	ClearPending(ctx context.Context, r Run, now time.Time) (Wake, error)
	DeferPending(ctx context.Context, r Run, retry time.Time) (Wake, error)
	EndRun(ctx context.Context, tenantID string, runID, seq int64, outcome string, now time.Time) error
	// RefreshSubject and EndSubjectRuns change the runs of one source's
	// subject only.
	RefreshSubject(ctx context.Context, tenantID, source, subject string, eventID int64, facts workflow.Facts, changed bool, now time.Time) ([]Wake, error)
	EndSubjectRuns(ctx context.Context, tenantID, source, subject, outcome string, keep []string, now time.Time) (int, error)
	MarkPromoted(ctx context.Context, wakes []Wake) error

	// Patients: engagements, segments, the contact's zone and language.
	// PatientIndex is a patient's blind index in a tenant, as new rows
	// carry it.
	PatientIndex(tenantID, patientRef string) string
	// ContactPreferences reads the contact registered through the API, else
	// the one the source's bundles gave ("" : the API's only).
	ContactPreferences(ctx context.Context, tenantID, source, patientRef string) (workflow.Contact, error)
	EngagementsSince(ctx context.Context, r Run, since time.Time) ([]Engagement, error)
	RecordEngagement(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte, now time.Time) (int64, []Wake, error)
	RecordDelivered(ctx context.Context, tenantID, patientRef, subject string, now time.Time) ([]Wake, error)
	AddSegmentMember(ctx context.Context, tenantID, segment, patientRef string) (bool, error)
	SegmentMembers(ctx context.Context, tenantID, segment string) ([]string, error)
}

// ErrStale means a run changed since it was loaded (another wake-up, an
// event, a cancellation); the caller's wake-up is obsolete.
var ErrStale = errors.New("run changed since it was loaded")

// ErrPermanent marks a failure that retrying the task cannot change (the
// row is gone, the task names another tenant, the outcome is recorded).
var ErrPermanent = errors.New("permanent")

func permanent(err error) error { return fmt.Errorf("%w: %w", err, ErrPermanent) }
