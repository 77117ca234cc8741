package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/workflow"
)

// BatchStore is what starting runs a batch at a time needs from storage.
type BatchStore interface {
	// ContactsOf are the contacts stored under patient references of a
	// tenant, by reference (absent: none), as ContactFor finds them: the
	// API's, else the source's.
	ContactsOf(ctx context.Context, tenantID, source string, patientRefs []string) (map[string]Contact, error)
	// BeginStarts writes, in one transaction, each planned run that does
	// not exist yet (nobody re-enters a workflow) with its path, its
	// notices, their decisions, the delivery attempts about to be made, the
	// contacts to store and every audit row.
	BeginStarts(ctx context.Context, starts []RunStart) ([]RunBegun, error)
	// HandOver records that deliveries (claimed by BeginStarts with no
	// attempt yet) are about to be handed to the relay: a crash after it
	// leaves them unknown, one before it lets them be sent again.
	HandOver(ctx context.Context, deliveryIDs []int64) error
	// FinishStarts records, in one transaction, what became of the
	// attempts: deliveries, notices, the runs' pending sends done (or
	// retried later), "delivered" engagements; it returns the wake-ups for
	// the queue.
	FinishStarts(ctx context.Context, finishes []RunFinish) ([]journey.Wake, error)
}

// RunStart is a planned run with its notices, to write together.
type RunStart struct {
	Start journey.Start
	// Pending are the sends still to attempt; the run is saved with them
	// (and due at PendingGrace) so that a crash before they are done
	// leaves them to be re-driven. Empty: the run is saved as its plan
	// left it.
	Pending []workflow.Action
	Notices []NoticeStart
	// Contact is the bundle's contact to store (not over one registered
	// through the API); nil: none.
	Contact *ContactUpsert
}

// NoticeStart is one send's notice as planned.
type NoticeStart struct {
	Step, Template, Type string
	PortalToken          string
	Status               string // NoticePending: attempted now; else final
	Reasons              []string
	Payload              []byte // the notice as sent; sealed by the store
	Portal               []byte // its PortalView's JSON; sealed by the store
	PortalDecision       *Decision
	Channel              string // set for an attempt made now
	MessageID            string // the attempt's Message-ID, stored with its delivery
	Decision             *Decision
	Disclosure           Disclosure // what the attempt discloses (see plan)

	stepChannel string   // the step's channel, attempted or not: for the metrics
	out         outgoing // how the step sends: the links its mail gets
}

// ContactUpsert is a contact to store under a patient reference.
type ContactUpsert struct {
	PatientRef string
	Contact    Contact
}

// RunBegun is what BeginStarts wrote of a RunStart.
type RunBegun struct {
	Created bool // false: the run existed; nothing was written
	Run     journey.Run
	// Notices and Deliveries, in the order of the RunStart's notices (a
	// zero Delivery where no attempt is made).
	Notices    []Notice
	Deliveries []Delivery
}

// RunFinish is what became of a begun run's attempts.
type RunFinish struct {
	Run     journey.Run
	Results []SendResult
}

// SendResult is one attempt's outcome.
type SendResult struct {
	Notice    Notice
	Delivery  Delivery
	Sent      bool
	Temporary bool // failed, to be tried again
	Unknown   bool // the relay may have taken it: never tried again on its own
	TLS       bool
	MessageID string
	Err       string // no PHI
	// Disclosure is what the message disclosed (content, recipient,
	// patient): recorded with a sent or unknown outcome.
	Disclosure Disclosure
}

var _ journey.BatchStarter = (*Service)(nil)

// maxParallelSends bounds the messages of a batch in flight at once; the
// channel's own pool bounds its connections.
const maxParallelSends = 32

// Start carries out the first sends of planned runs a batch at a time: it
// reads the contacts of all of them at once, builds and decides on each
// notice in memory, writes the runs with their notices in one transaction,
// hands the messages to the channel, and records the outcomes in a second
// transaction. It makes the records the one-at-a-time path (Send) makes,
// in those two transactions.
func (s *Service) Start(ctx context.Context, starts []journey.Start) ([]journey.Started, []journey.Wake) {
	out := make([]journey.Started, len(starts))
	bs, ok := s.Store.(BatchStore)
	if !ok {
		for i := range out {
			out[i].Err = errors.New("the store cannot start runs in batches")
		}
		return out, nil
	}
	plans, emails, errs := s.plan(ctx, bs, starts)
	var todo []RunStart
	var todoOf []int
	for i, err := range errs {
		if err != nil {
			out[i].Err = err
			continue
		}
		todo, todoOf = append(todo, plans[i]), append(todoOf, i)
	}
	if len(todo) == 0 {
		return out, nil
	}
	begun, err := bs.BeginStarts(ctx, todo)
	if err != nil {
		for _, i := range todoOf {
			out[i].Err = err
		}
		return out, nil
	}
	// Attempt the sends of the runs written now, a chunk of runs at a time:
	// each chunk's deliveries are recorded as handed over, sent, and their
	// outcomes recorded before the next chunk starts, so that a crash
	// leaves at most one chunk's outcomes unknown; the rest are sent again
	// when their runs' pending sends are re-driven.
	type attempt struct{ k, notice int } // k: index in todo
	var chunks [][]attempt
	var chunk []attempt
	for k, b := range begun {
		out[todoOf[k]].Created = b.Created
		if !b.Created {
			continue
		}
		var run []attempt
		for n, ns := range todo[k].Notices {
			if ns.Status == NoticePending {
				run = append(run, attempt{k, n})
			} else {
				s.Metrics.Notice(ns.Status, ns.stepChannel)
			}
		}
		if len(chunk) > 0 && len(chunk)+len(run) > maxParallelSends {
			chunks, chunk = append(chunks, chunk), nil
		}
		chunk = append(chunk, run...)
	}
	if len(chunk) > 0 {
		chunks = append(chunks, chunk)
	}
	var wakes []journey.Wake
	for _, chunk := range chunks {
		ids := make([]int64, len(chunk))
		for i, a := range chunk {
			ids[i] = begun[a.k].Deliveries[a.notice].ID
		}
		if err := bs.HandOver(ctx, ids); err != nil {
			// Nothing of this chunk went out: its runs' pending sends are
			// re-driven later.
			for _, a := range chunk {
				out[todoOf[a.k]].Err = err
			}
			continue
		}
		results := map[int][]SendResult{} // by k
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, a := range chunk {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, ns := begun[a.k], todo[a.k].Notices[a.notice]
				r := SendResult{Notice: b.Notices[a.notice], Delivery: b.Deliveries[a.notice], Disclosure: ns.Disclosure}
				r.Disclosure.PatientIndex, r.Disclosure.PatientRef = b.Run.PatientIndex, b.Run.Facts["patient"]
				r.Delivery.Attempts = 1
				email, err := s.stamp(emails[todoOf[a.k]][a.notice], r.Notice.ID, ns.out)
				var receipt notify.Receipt
				if err == nil {
					receipt, err = s.Channels[ns.Channel].Send(ctx, email)
				}
				if err == nil {
					r.Sent, r.TLS, r.MessageID = true, receipt.TLS, receipt.MessageID
				} else {
					r.Err = "email delivery failed: " + err.Error()
					r.Temporary = errors.Is(err, notify.ErrTemporary)
					if r.Unknown = errors.Is(err, notify.ErrUnknownOutcome); r.Unknown {
						r.Err, r.MessageID = "email delivery outcome unknown: "+err.Error(), emails[todoOf[a.k]][a.notice].MessageID
					}
				}
				mu.Lock()
				results[a.k] = append(results[a.k], r)
				mu.Unlock()
			}()
		}
		wg.Wait()
		var finishes []RunFinish
		var finishOf []int
		for _, a := range chunk {
			if rs, ok := results[a.k]; ok {
				finishes = append(finishes, RunFinish{Run: begun[a.k].Run, Results: rs})
				finishOf = append(finishOf, todoOf[a.k])
				delete(results, a.k) // a run with several sends is finished once
			}
		}
		// Once the relay has answered, record it even if the batch is being
		// cancelled: a lost "sent" would look like an unknown outcome.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		w, err := bs.FinishStarts(wctx, finishes)
		cancel()
		if err != nil {
			for _, i := range finishOf {
				out[i].Err = fmt.Errorf("record the outcome of the sends: %w", err)
			}
			continue
		}
		wakes = append(wakes, w...)
		for k, f := range finishes {
			for _, r := range f.Results {
				switch {
				case r.Sent:
					out[finishOf[k]].Delivered = true
					s.Metrics.Notice(NoticeSent, r.Delivery.Channel)
				case r.Temporary: // pending, tried again
				case r.Unknown:
					s.Metrics.Notice(DeliveryUnknown, r.Delivery.Channel)
				default:
					s.Metrics.Notice(NoticeFailed, r.Delivery.Channel)
				}
			}
		}
	}
	return out, wakes
}

// plan reads each start's event and contact and decides on each of its
// notices: the records to write and the messages to send (by start, by
// notice). A start whose event's referenced resources could not be fetched
// gets an error (tried again later); what cannot be sent is recorded as
// failed or denied, as Send records it.
func (s *Service) plan(ctx context.Context, bs BatchStore, starts []journey.Start) ([]RunStart, [][]notify.Email, []error) {
	plans := make([]RunStart, len(starts))
	emails := make([][]notify.Email, len(starts))
	errs := make([]error, len(starts))
	type read struct {
		sub    subject
		reason string
		err    error
	}
	type scope struct{ tenant, source string }
	reads := map[int64]read{}      // by event
	refsOf := map[scope][]string{} // by tenant and source
	for _, st := range starts {
		ev := st.Event
		if ev == nil {
			continue
		}
		if _, ok := reads[ev.ID]; ok {
			continue
		}
		sub, reason, err := s.read(ctx, ev, noticeTypeOfEvent(ev))
		reads[ev.ID] = read{sub, reason, err}
		if err == nil && reason == "" {
			sc := scope{ev.TenantID, ev.Source}
			refsOf[sc] = append(refsOf[sc], journey.PatientRefs(sub.patientID, sub.patientRef)...)
		}
	}
	contacts := map[scope]map[string]Contact{}
	for sc, refs := range refsOf {
		cs, err := bs.ContactsOf(ctx, sc.tenant, sc.source, refs)
		if err != nil {
			for i := range errs {
				errs[i] = fmt.Errorf("contacts: %w", err)
			}
			return plans, emails, errs
		}
		contacts[sc] = cs
	}
	for i, st := range starts {
		rs := RunStart{Start: st}
		if st.Event == nil {
			// An API-event or segment run: its sends have no notice to
			// record (Send skips them too); the run goes on.
			if s.Log != nil && len(st.Sends) > 0 {
				s.Log.Warn("send steps skipped: the run has no EOB or appointment", "workflow", st.Run.WorkflowID)
			}
			plans[i] = rs
			continue
		}
		rd := reads[st.Event.ID]
		if rd.err != nil {
			errs[i] = rd.err
			continue
		}
		var contact Contact
		if rd.reason == "" {
			refs := journey.PatientRefs(rd.sub.patientID, rd.sub.patientRef)
			stored := make([]*Contact, len(refs))
			for k, ref := range refs {
				if c, ok := contacts[scope{st.Event.TenantID, st.Event.Source}][ref]; ok {
					stored[k] = &c
				}
			}
			var upsert *Contact
			contact, upsert = s.pickContact(stored, rd.sub)
			if upsert != nil {
				rs.Contact = &ContactUpsert{PatientRef: refs[0], Contact: *upsert}
			}
		}
		rs.Notices = make([]NoticeStart, 0, len(st.Sends))
		emails[i] = make([]notify.Email, 0, len(st.Sends))
		for _, a := range st.Sends {
			noticeType := notify.NoticeTypeOf(a.Template)
			if noticeType == "" {
				if s.Log != nil {
					s.Log.Warn("send step skipped", "workflow", st.Run.WorkflowID, "step", a.Step, "err", "template is not known")
				}
				continue
			}
			ns := NoticeStart{Step: a.Step, Template: a.Template, Type: noticeType, PortalToken: seal.NewToken()}
			out := outgoing{template: a.Template, channel: a.Channel, from: st.From, tenant: st.Run.TenantID,
				purpose: st.Purpose, tracking: st.Tracking, patientRef: st.Run.Facts["patient"]}
			if out.channel == "" {
				out.channel = "email"
			}
			ns.stepChannel, ns.out = out.channel, out
			var email notify.Email
			ch, ok := s.Channels[out.channel]
			switch {
			case rd.reason != "":
				ns.Status, ns.Reasons = NoticeFailed, []string{rd.reason}
			case !ok:
				ns.Status, ns.Reasons = NoticeFailed, []string{"channel " + out.channel + " is not configured in this deployment; not sent"}
			case contact.Email == "":
				ns.Status, ns.Reasons = NoticeFailed, []string{"no email address for the patient"}
			default:
				base, d := s.draftFor(rd.sub, contact, ns.PortalToken, st.Purpose)
				pd := d.Clone() // the portal's decision starts from the undecided notice
				p, rec, err := s.decision(ctx, st.Run.TenantID, contact, base, d, out, ch.Security())
				if err != nil {
					errs[i] = err
					break
				}
				ns.Decision, ns.Status, ns.Reasons, ns.Disclosure = rec, p.Status, p.Reasons, p.Disclosure
				if p.Status == "" {
					ns.Portal, ns.PortalDecision, err = s.portalDecision(ctx, st.Run.TenantID, contact, base, pd, out, p.Email.To, portalViewOf(rd.sub))
					if err != nil {
						errs[i] = err
						break
					}
					ns.Status, ns.Payload, ns.Channel, email = NoticePending, p.Payload, out.channel, p.Email
					ns.MessageID = messageIDFor(ch)
					email.MessageID = ns.MessageID
					rs.Pending = append(rs.Pending, a)
				}
			}
			rs.Notices = append(rs.Notices, ns)
			emails[i] = append(emails[i], email)
		}
		plans[i] = rs
	}
	return plans, emails, errs
}

// noticeTypeOfEvent is the notice an event's send steps make.
func noticeTypeOfEvent(ev *journey.Event) string {
	if ev.ResourceType == "Appointment" {
		return notify.NoticeTypeAppointment
	}
	return notify.NoticeTypeEOB
}
