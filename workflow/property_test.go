package workflow

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"
)

var (
	genEvents    = []string{"opened", "clicked", "portal.viewed", "delivered"}
	genDurations = []string{"0s", "30m", "1h", "2h", "1d", "3d"}
	genOffsets   = []string{"-72h", "-24h", "-1h", "", "2h"}
	genZones     = []string{"", "UTC", "America/Chicago", "America/New_York", "Asia/Kolkata", "Europe/London", "Mars/Olympus_Mons"}
	genDays      = [][]string{nil, {"all"}, {"weekdays"}, {"weekends"}, {"thu"}, {"mon", "fri"}}
	genHours     = [][2]string{{"09:00", "18:00"}, {"12:00", "14:00"}, {"00:00", "24:00"}, {"02:30", "04:00"}, {"22:00", "23:30"}}
	genFields    = []string{"fact.status", "fact.kind", "contact.language", "contact.plan", "engagement.opened", "engagement.clicked"}
	genOps       = []string{"eq", "ne", "in", "exists", "missing", "true", "false"}
	genValues    = []string{"fulfilled", "booked", "en", "gold", "true", "false"}
	genBase      = time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC) // two days before a DST change
	// utc_offset facts, one unreadable.
	genOffsetFacts = []string{"", "+05:30", "-06:00", "Z", "+5:30"}
)

// randomDefinition draws a step graph. Many draws are invalid; the callers
// keep the ones Validate accepts.
func randomDefinition(r *rand.Rand) Definition {
	n := 1 + r.IntN(9)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "s" + strconv.Itoa(i)
	}
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	// The steps mostly chain forward so that many draws are valid: a step's
	// main way on is usually the step after it (by falling through or by
	// name); its other ways on usually point further down, sometimes back.
	var i int
	anyID := func() string { return ids[r.IntN(n)] }
	other := func() string {
		if i+1 < n && r.IntN(10) < 7 {
			return ids[i+1+r.IntN(n-i-1)]
		}
		return anyID()
	}
	main := func() string {
		if i+1 < n && r.IntN(10) < 8 {
			if r.IntN(2) == 0 {
				return ""
			}
			return ids[i+1]
		}
		if r.IntN(4) == 0 {
			return ""
		}
		return other()
	}
	named := func() string {
		if v := main(); v != "" {
			return v
		}
		return other()
	}
	steps := make([]Step, n)
	for i = range steps {
		s := Step{ID: ids[i]}
		kind := r.IntN(10)
		if i == n-1 && r.IntN(4) > 0 {
			kind = 9
		}
		switch kind {
		case 0, 1:
			s.Type, s.Channel, s.Template, s.Next = StepSend, pick([]string{"email", "sms"}), pick([]string{"t.one", "t.two", "t.three"}), main()
		case 2, 3:
			s.Type, s.Next = StepWait, main()
			switch r.IntN(4) {
			case 0:
				s.Duration = pick(genDurations)
			case 1:
				s.Until = genBase.Add(time.Duration(r.IntN(240)-48) * time.Hour).Format(time.RFC3339)
			case 2:
				s.NextDay = true
			default:
				s.Relative = &Relative{Fact: pick([]string{"start", "end"}), Offset: pick(genOffsets)}
			}
			if r.IntN(2) == 0 {
				h := genHours[r.IntN(len(genHours))]
				s.Window = &Window{Days: genDays[r.IntN(len(genDays))], From: h[0], To: h[1]}
				if r.IntN(3) == 0 {
					s.Window.TimeZone = pick(genZones[1:5])
				}
			}
			if r.IntN(5) == 0 {
				s.IfPassed = other()
			}
		case 4:
			s.Type, s.Next, s.OnTimeout, s.Timeout = StepWaitEvent, main(), other(), pick(genDurations[1:])
			if r.IntN(2) == 0 {
				s.Next, s.OnTimeout = other(), main()
			}
			s.Events = []string{pick(genEvents)}
			if r.IntN(2) == 0 {
				s.Events = append(s.Events, pick(genEvents))
			}
		case 5:
			s.Type, s.Else = StepBranch, named()
			for range 1 + r.IntN(3) {
				c := Condition{Next: other()}
				for range 1 + r.IntN(2) {
					p := Predicate{Field: pick(genFields), Op: pick(genOps)}
					switch p.Op {
					case "eq", "ne":
						p.Value = pick(genValues)
					case "in":
						p.Values = []string{pick(genValues), pick(genValues)}
					}
					c.When = append(c.When, p)
				}
				s.Conditions = append(s.Conditions, c)
			}
		case 6:
			s.Type = StepGoto
			if r.IntN(3) > 0 {
				s.Target = named()
			} else {
				s.Workflow = "other"
			}
		case 7:
			s.Type, s.Segment, s.Next = StepAddToSegment, "vip", main()
		default:
			s.Type, s.Reason = StepEnd, pick([]string{"", "done"})
		}
		steps[i] = s
	}
	d := Definition{ID: "random", Trigger: Trigger{Event: "appointment.booked"}, Steps: steps}
	if r.IntN(3) == 0 {
		d.TimeZone = pick(genZones[1:6])
	}
	if r.IntN(4) == 0 {
		d.LateAfter = pick([]string{"0s", "10m", "2h"})
	}
	return d
}

// randomFacts moves the appointment around the clock; sometimes a fact is
// missing or unreadable.
func randomFacts(r *rand.Rand, now time.Time) Facts {
	f := Facts{"status": []string{"booked", "fulfilled", "noshow"}[r.IntN(3)], "kind": "visit"}
	if o := genOffsetFacts[r.IntN(len(genOffsetFacts))]; o != "" {
		f[FactUTCOffset] = o
	}
	start := now.Add(time.Duration(r.IntN(24*14)-24) * time.Hour)
	switch r.IntN(10) {
	case 0:
	case 1:
		f["start"] = "next tuesday"
	default:
		f["start"] = start.Format(time.RFC3339)
		f["end"] = start.Add(time.Duration(15+r.IntN(120)) * time.Minute).Format(time.RFC3339)
	}
	return f
}

// runProperties drives a valid definition with the stream ops and checks,
// after every Advance: no error; waiting (with a time or events) or ended;
// no step executed twice; no step sent twice over the whole run; an ended
// run never changes; Advance is deterministic and leaves its argument alone;
// a next_day wait never passes, and waits until a moment after the input's
// time and within a week (the next day, then a window opening).
// Then it wakes the run at its due times: it must end within len(Steps)+1
// wakes, since every wait of a valid definition has a time.
func runProperties(t *testing.T, d Definition, r *rand.Rand, ops []byte) {
	t.Helper()
	now := genBase.Add(time.Duration(r.IntN(72*60)) * time.Minute)
	contact := Contact{TimeZone: genZones[r.IntN(len(genZones))], Language: "en", Fields: map[string]string{"plan": "gold"}}
	facts := randomFacts(r, now)
	var st State
	sentSteps := map[string]bool{}

	apply := func(in Input) {
		t.Helper()
		in.Facts, in.Contact = facts, contact
		before := cloneState(st)
		next, acts, err := Advance(d, st, in)
		if err != nil {
			t.Fatalf("%s at %s: %v\ndefinition %+v\nstate %+v", in.Kind, in.Now, err, d, st)
		}
		again, acts2, _ := Advance(d, st, in)
		if !reflect.DeepEqual(next, again) || !reflect.DeepEqual(acts, acts2) {
			t.Fatalf("Advance is not deterministic")
		}
		if !reflect.DeepEqual(before, st) {
			t.Fatalf("Advance changed its argument")
		}
		if st.Status == StatusEnded && (!reflect.DeepEqual(next, st) || len(acts) > 0) {
			t.Fatalf("an ended run changed: %+v → %+v, %v", st, next, acts)
		}
		checkAfter(t, next)
		for _, s := range d.Steps {
			if s.NextDay && next.Happened[s.ID] == HappenedPassed {
				t.Fatalf("next_day wait %s passed\ndefinition %+v", s.ID, d)
			}
			if s.NextDay && s.ID == next.Step && next.Status == StatusWaiting && next.Step != st.Step &&
				(!next.WaitUntil.After(in.Now) || next.WaitUntil.After(in.Now.Add(8*24*time.Hour))) {
				t.Fatalf("next_day wait %s entered at %s waits until %s", s.ID, in.Now, next.WaitUntil)
			}
		}
		for _, a := range acts {
			if a.Type == ActionSend {
				if sentSteps[a.Step] {
					t.Fatalf("step %s sent twice\ndefinition %+v", a.Step, d)
				}
				sentSteps[a.Step] = true
			}
		}
		st = next
	}

	apply(Input{Kind: InputStart, Now: now})
	for _, b := range ops {
		// The clock mostly moves forward, sometimes jumps, rarely goes back.
		switch b >> 5 {
		case 0:
			now = now.Add(-time.Duration(b&31) * time.Minute)
		case 1, 2, 3:
			now = now.Add(time.Duration(b&31) * time.Minute)
		default:
			now = now.Add(time.Duration(b&31) * 3 * time.Hour)
		}
		switch b % 7 {
		case 0, 1:
			if !st.WaitUntil.IsZero() && r.IntN(2) == 0 {
				now = st.WaitUntil.Add(time.Duration(r.IntN(3)) * 40 * time.Minute)
			}
			apply(Input{Kind: InputWake, Now: now})
		case 2, 3:
			apply(Input{Kind: InputEvent, Now: now, Event: append(genEvents, "portal.login")[r.IntN(len(genEvents)+1)]})
		case 4:
			facts = randomFacts(r, now)
			apply(Input{Kind: InputFactsChanged, Now: now})
		case 5:
			apply(Input{Kind: InputStart, Now: now})
		default:
			if r.IntN(4) == 0 {
				apply(Input{Kind: InputEnd, Now: now, Reason: "cancelled"})
			} else {
				apply(Input{Kind: InputWake, Now: now})
			}
		}
	}
	for range len(d.Steps) + 1 {
		if st.Status == StatusEnded {
			return
		}
		if st.WaitUntil.IsZero() {
			t.Fatalf("a valid definition waits with no time: %+v", st)
		}
		if st.WaitUntil.After(now) {
			now = st.WaitUntil
		}
		apply(Input{Kind: InputWake, Now: now})
	}
	if st.Status != StatusEnded {
		t.Fatalf("run did not end after %d due wakes: %+v\ndefinition %+v", len(d.Steps)+1, st, d)
	}
}

func seededRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func TestAdvanceProperties(t *testing.T) {
	const seeds = 5000
	valid := 0
	types := map[string]int{}
	outcomes := map[string]int{}
	nextDay := 0
	for seed := range uint64(seeds) {
		r := seededRand(seed)
		d := randomDefinition(r)
		if len(Validate(d, testRegistry())) > 0 {
			continue
		}
		valid++
		for _, s := range d.Steps {
			types[s.Type]++
			if s.NextDay {
				nextDay++
			}
		}
		ops := make([]byte, r.IntN(40))
		for i := range ops {
			ops[i] = byte(r.Uint32())
		}
		ok := t.Run("seed"+strconv.FormatUint(seed, 10), func(t *testing.T) {
			runProperties(t, d, r, ops)
		})
		if !ok {
			return
		}
		// Count how runs end with plain due wakes, to show the generator
		// reaches every outcome.
		st, _, _ := Advance(d, State{}, Input{Kind: InputStart, Now: genBase, Facts: randomFacts(r, genBase)})
		outcomes[st.Outcome]++
	}
	t.Logf("%d of %d random definitions valid; step types %v (next_day waits %d); outcomes at start %v", valid, seeds, types, nextDay, outcomes)
	if nextDay == 0 {
		t.Errorf("no valid random definition has a next_day wait")
	}
	if valid < seeds/5 {
		t.Errorf("only %d of %d random definitions were valid: the generator tests too little", valid, seeds)
	}
	for _, typ := range []string{StepSend, StepWait, StepWaitEvent, StepBranch, StepGoto, StepAddToSegment, StepEnd} {
		if types[typ] == 0 {
			t.Errorf("no valid random definition has a %s step", typ)
		}
	}
	for _, o := range []string{OutcomeCompleted, OutcomeLoop, OutcomeGoto, OutcomeMissingFact} {
		if outcomes[o] == 0 {
			t.Errorf("no random run ended at start with %s", o)
		}
	}
}

// FuzzAdvance: seed picks the definition (skipped unless valid) and the
// random choices, ops the event stream.
func FuzzAdvance(f *testing.F) {
	for _, seed := range []uint64{1, 7, 42, 1234, 99999} {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], seed*2654435761)
		f.Add(seed, b[:])
	}
	f.Fuzz(func(t *testing.T, seed uint64, ops []byte) {
		r := seededRand(seed)
		d := randomDefinition(r)
		if len(Validate(d, testRegistry())) > 0 {
			t.Skip()
		}
		if len(ops) > 256 {
			ops = ops[:256]
		}
		runProperties(t, d, r, ops)
	})
}
