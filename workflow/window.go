package workflow

import (
	"errors"
	"fmt"
	"time"
	// The IANA database is embedded so that send windows fall on the same
	// instants on every host, whether or not it ships zoneinfo files.
	_ "time/tzdata"
)

// ErrWindow is wrapped by the errors NextOpening returns for a malformed
// window.
var ErrWindow = errors.New("invalid send window")

// dayNames are the single days a window may list.
var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// windowDays is the set of weekdays a window opens on. An empty list means
// weekdays.
func windowDays(days []string) ([7]bool, error) {
	var set [7]bool
	if len(days) == 0 {
		days = []string{"weekdays"}
	}
	for i, d := range days {
		switch d {
		case "all":
			for w := range set {
				set[w] = true
			}
		case "weekdays":
			for w := time.Monday; w <= time.Friday; w++ {
				set[w] = true
			}
		case "weekends":
			set[time.Saturday], set[time.Sunday] = true, true
		default:
			w, ok := dayNames[d]
			if !ok {
				return set, fmt.Errorf("%w: days[%d] is not mon..sun, weekdays, weekends or all", ErrWindow, i)
			}
			set[w] = true
		}
	}
	return set, nil
}

// clock parses "HH:MM" (00:00 to 23:59; "24:00" too when end is set) into
// minutes after midnight.
func clock(s string, end bool) (int, error) {
	if len(s) != 5 || s[2] != ':' || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[3]) || !isDigit(s[4]) {
		return 0, errors.New("not HH:MM")
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if end && h == 24 && m == 0 {
		return 24 * 60, nil
	}
	if h > 23 || m > 59 {
		return 0, errors.New("not a time of day")
	}
	return h*60 + m, nil
}

// windowBounds checks a window's fields and returns From and To in minutes.
func windowBounds(w Window) (from, to int, days [7]bool, err error) {
	from, err = clock(w.From, false)
	if err != nil {
		return 0, 0, days, fmt.Errorf("%w: from: %w", ErrWindow, err)
	}
	to, err = clock(w.To, true)
	if err != nil {
		return 0, 0, days, fmt.Errorf("%w: to: %w", ErrWindow, err)
	}
	if from >= to {
		return 0, 0, days, fmt.Errorf("%w: from must be before to", ErrWindow)
	}
	days, err = windowDays(w.Days)
	return from, to, days, err
}

// NextOpening returns the first instant at or after t that lies inside the
// window w, reading the window's days and times in loc (UTC when nil). An
// instant is inside when, on the wall clock of loc, its weekday is one of
// the window's days and its time of day is at or after From and before To:
// the From minute is inside, the To minute is not. w.TimeZone is not
// consulted: the caller chooses the zone (Advance uses the window's zone,
// then the contact's, then the workflow's, then the subject's UTC offset,
// then UTC; see Window.TimeZone).
//
// Across a daylight-saving change "09:00" stays 09:00 on the wall clock. A
// From that the clocks skip opens when the skipped hour ends; a From that
// occurs twice opens at its first occurrence.
func NextOpening(t time.Time, w Window, loc *time.Location) (time.Time, error) {
	from, to, days, err := windowBounds(w)
	if err != nil {
		return time.Time{}, err
	}
	if loc == nil {
		loc = time.UTC
	}
	inside := func(x time.Time) bool {
		l := x.In(loc)
		m := l.Hour()*60 + l.Minute()
		return days[l.Weekday()] && m >= from && m < to
	}
	if inside(t) {
		return t, nil
	}
	y, mo, d := t.In(loc).Date()
	// Today's opening (when still ahead), then the next seven days: one of
	// them is an open day.
	for k := 0; k <= 8; k++ {
		open := wallOpening(y, mo, d+k, from, loc)
		if open.Before(t) || !inside(open) {
			continue
		}
		return open.In(t.Location()), nil
	}
	// Unreachable for a window that passed windowBounds.
	return time.Time{}, fmt.Errorf("%w: no opening within a week", ErrWindow)
}

// wallOpening is the first instant of calendar day y-mo-d (normalised) in
// loc whose wall clock reads minute-of-day minute or later.
func wallOpening(y int, mo time.Month, d, minute int, loc *time.Location) time.Time {
	wy, wm, wd := time.Date(y, mo, d, 12, 0, 0, 0, time.UTC).Date()
	sameDay := func(l time.Time) bool {
		ly, lm, ld := l.Date()
		return ly == wy && lm == wm && ld == wd
	}
	open := time.Date(wy, wm, wd, minute/60, minute%60, 0, 0, loc)
	l := open.In(loc)
	start, _ := open.ZoneBounds()
	if sameDay(l) && l.Hour()*60+l.Minute() == minute {
		// The wall time exists. When the clocks were set back just before,
		// it may have existed in the previous zone too: take that first one.
		if !start.IsZero() {
			_, cur := open.Zone()
			_, prev := start.Add(-time.Second).Zone()
			if prev > cur {
				e := open.Add(-time.Duration(prev-cur) * time.Second).In(loc)
				if sameDay(e) && e.Hour() == l.Hour() && e.Minute() == l.Minute() {
					return e
				}
			}
		}
		return open
	}
	// The clocks skipped the wall time: the window opens when the gap ends.
	// time.Date resolved the missing time with the offset of one side of the
	// gap; the gap's end is where that zone ends (wall clock still before the
	// wanted minute, on this day or, for a skipped midnight, the day before)
	// or began (already past it).
	ly, lm, ld := l.Date()
	earlierDay := time.Date(ly, lm, ld, 0, 0, 0, 0, time.UTC).Before(time.Date(wy, wm, wd, 0, 0, 0, 0, time.UTC))
	gapEnd := start
	if earlierDay || (sameDay(l) && l.Hour()*60+l.Minute() < minute) {
		_, gapEnd = open.ZoneBounds()
	}
	if !gapEnd.IsZero() {
		s := gapEnd.In(loc)
		if sameDay(s) && s.Hour()*60+s.Minute() >= minute {
			return s
		}
	}
	return open
}

// nextDayStart is the first instant of the calendar day after t's in loc:
// its 00:00, or, when the clocks skip midnight, the end of the skipped span.
func nextDayStart(t time.Time, loc *time.Location) time.Time {
	y, mo, d := t.In(loc).Date()
	return wallOpening(y, mo, d+1, 0, loc)
}

// offsetZone reads a UTC offset as RFC 3339 writes it ("Z", "+05:30",
// "-06:00") as a fixed zone.
func offsetZone(s string) (*time.Location, error) {
	if s == "Z" || s == "z" {
		return time.UTC, nil
	}
	if len(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' ||
		!isDigit(s[1]) || !isDigit(s[2]) || !isDigit(s[4]) || !isDigit(s[5]) {
		return nil, errors.New("not a UTC offset: want Z or ±HH:MM")
	}
	h := int(s[1]-'0')*10 + int(s[2]-'0')
	m := int(s[4]-'0')*10 + int(s[5]-'0')
	if h > 23 || m > 59 {
		return nil, errors.New("UTC offset out of range")
	}
	secs := (h*60 + m) * 60
	if s[0] == '-' {
		secs = -secs
	}
	return time.FixedZone("UTC"+s, secs), nil
}

// loadZone loads an IANA zone; "" and "Local" (the host's zone, which would
// make results depend on where the worker runs) are refused.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, errors.New("no IANA time zone")
	}
	return time.LoadLocation(name)
}
