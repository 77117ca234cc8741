package portal

import (
	"context"
	"errors"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
)

// Verification methods, a tenant setting.
const (
	VerifyCode          = "code"
	VerifyBirthDate     = "birth_date"
	VerifyCodeBirthDate = "code_and_birth_date"
)

// ValidVerification reports whether m is a verification method.
func ValidVerification(m string) bool {
	return m == VerifyCode || m == VerifyBirthDate || m == VerifyCodeBirthDate
}

func needsCode(m string) bool      { return m != VerifyBirthDate }
func needsBirthDate(m string) bool { return m != VerifyCode }

// Notice is a notice as its link finds it.
type Notice struct {
	ID        int64
	TenantID  string
	CreatedAt time.Time
	// Verification is the tenant's method.
	Verification string
	// View is nil when the notice has none (sent before the portal, or not
	// sent): the portal then has nothing to show.
	View *delivery.PortalView
}

// Limits bound guessing. Zero fields take the defaults.
type Limits struct {
	CodeTTL      time.Duration // a code's life: 10 minutes
	CodeAttempts int           // tries per code: 3
	CodeInterval time.Duration // between two codes for one notice: 30 seconds
	CodesPerLock int           // codes sent before the notice locks: 5
	Failures     int           // wrong proofs before the notice locks: 5
	LockFor      time.Duration // 15 minutes
}

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.CodeTTL, 10*time.Minute)
	defi(&l.CodeAttempts, 3)
	def(&l.CodeInterval, 30*time.Second)
	defi(&l.CodesPerLock, 5)
	defi(&l.Failures, 5)
	def(&l.LockFor, 15*time.Minute)
	return l
}

// Result is how a proof or a code request ended.
type Result int

const (
	Verified Result = iota + 1 // the proof held: a session was created
	Wrong                      // the proof failed; more tries remain
	Locked                     // the notice is locked for a while
	CodeSent                   // a new code was stored: mail it
	TooSoon                    // a code was sent moments ago: none now
)

// Attempt is one proof: the code typed (when the method asks one) and
// whether the date of birth typed matched (true when none is asked).
type Attempt struct {
	Code        string
	NeedCode    bool
	BirthDateOK bool
	// Session is the SHA-256 of the new session's cookie value, stored on
	// success; SessionUntil its end.
	Session      string
	SessionUntil time.Time
}

// Store is what the portal needs from storage; store.Store implements it.
type Store interface {
	// PortalNotice finds a tenant's notice by its token (fault.NotFound
	// when that tenant has none with it).
	PortalNotice(ctx context.Context, tenantID, token string) (Notice, error)
	// IssuePortalCode stores the keyed hash of a new one-time code for the
	// notice unless it is locked (Locked) or a code went out moments ago
	// (TooSoon); it returns CodeSent when stored. Sending too many locks it.
	IssuePortalCode(ctx context.Context, tenantID string, noticeID int64, code string, now time.Time, lim Limits) (Result, error)
	// VerifyPortal judges an attempt atomically: Verified (the code is
	// spent and the session stored), Wrong, or Locked.
	VerifyPortal(ctx context.Context, tenantID string, noticeID int64, a Attempt, now time.Time, lim Limits) (Result, error)
	// PortalSession is the notice a live session (by the SHA-256 of its
	// cookie value) opened; fault.NotFound when none.
	PortalSession(ctx context.Context, tenantID, sessionHash string, now time.Time) (int64, error)
	// PortalViewed writes the audit row of a view and its entry in the
	// accounting of disclosures.
	PortalViewed(ctx context.Context, tenantID string, noticeID int64, v delivery.PortalView) error
}

// Events records a portal.viewed event as POST /v1/events does, waking the
// runs that wait for it; *journey.Engine implements it.
type Events interface {
	RecordEvent(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte) (id int64, started int, err error)
}

// Mailer sends the one-time code mail; notify.EmailChannel implements it.
type Mailer interface {
	Send(ctx context.Context, e notify.Email) (notify.Receipt, error)
}

// ErrNoView means the notice has nothing the portal may show.
var ErrNoView = errors.New("portal: nothing to show for this notice")
