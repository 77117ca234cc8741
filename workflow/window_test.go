package workflow

import (
	"errors"
	"testing"
	"time"
)

func TestNextOpening(t *testing.T) {
	thursdayNoon := Window{Days: []string{"thu"}, From: "12:00", To: "14:00"}
	weekdays := Window{Days: []string{"weekdays"}, From: "09:00", To: "18:00"}
	defaultDays := Window{From: "09:00", To: "18:00"}
	daily := Window{Days: []string{"all"}, From: "09:00", To: "18:00"}
	weekends := Window{Days: []string{"weekends"}, From: "10:00", To: "12:00"}
	tests := []struct {
		name string
		t    string
		w    Window
		zone string
		want string
	}{
		// Thursday 12:00–14:00 America/Chicago. 2026-01-08 is a Thursday.
		{"thu: tuesday morning to thursday noon", "2026-01-06T15:00:00Z", thursdayNoon, "America/Chicago", "2026-01-08T18:00:00Z"},
		{"thu: inside stays", "2026-01-08T18:30:00Z", thursdayNoon, "America/Chicago", "2026-01-08T18:30:00Z"},
		{"thu: exactly at from is inside", "2026-01-08T18:00:00Z", thursdayNoon, "America/Chicago", "2026-01-08T18:00:00Z"},
		{"thu: a second before to is inside", "2026-01-08T19:59:59Z", thursdayNoon, "America/Chicago", "2026-01-08T19:59:59Z"},
		{"thu: exactly at to is outside", "2026-01-08T20:00:00Z", thursdayNoon, "America/Chicago", "2026-01-15T18:00:00Z"},
		{"thu: a second before from", "2026-01-08T17:59:59Z", thursdayNoon, "America/Chicago", "2026-01-08T18:00:00Z"},
		{"thu: across spring-forward (CST to CDT)", "2026-03-05T20:00:00Z", thursdayNoon, "America/Chicago", "2026-03-12T17:00:00Z"},
		{"thu: across fall-back (CDT to CST)", "2026-10-29T19:00:00Z", thursdayNoon, "America/Chicago", "2026-11-05T18:00:00Z"},
		{"thu: same instant read in New York is 13:00 EST, inside", "2026-01-08T18:00:00Z", thursdayNoon, "America/New_York", "2026-01-08T18:00:00Z"},

		// weekdays 09:00–18:00 over a weekend.
		{"weekdays: friday evening to monday (New York)", "2026-01-09T23:30:00Z", weekdays, "America/New_York", "2026-01-12T14:00:00Z"},
		{"weekdays: saturday to monday (New York)", "2026-01-10T15:00:00Z", weekdays, "America/New_York", "2026-01-12T14:00:00Z"},
		{"weekdays: sunday 23:59 to monday", "2026-01-12T04:59:00Z", weekdays, "America/New_York", "2026-01-12T14:00:00Z"},
		{"weekdays: empty days mean weekdays", "2026-01-10T15:00:00Z", defaultDays, "America/New_York", "2026-01-12T14:00:00Z"},
		{"weekdays: friday 18:00 EST, DST weekend, monday 09:00 EDT", "2026-03-06T23:00:00Z", weekdays, "America/New_York", "2026-03-09T13:00:00Z"},
		{"weekdays: friday 18:00 CST, DST weekend, monday 09:00 CDT", "2026-03-07T00:00:00Z", weekdays, "America/Chicago", "2026-03-09T14:00:00Z"},
		{"weekdays: friday 18:00 EDT, fall-back weekend, monday 09:00 EST", "2026-10-30T22:00:00Z", weekdays, "America/New_York", "2026-11-02T14:00:00Z"},
		{"weekdays: friday 18:00 CDT, fall-back weekend, monday 09:00 CST", "2026-10-30T23:00:00Z", weekdays, "America/Chicago", "2026-11-02T15:00:00Z"},

		// Daily windows on the change days themselves (both Sundays).
		{"daily: saturday 17:30 CST inside", "2026-03-07T23:30:00Z", daily, "America/Chicago", "2026-03-07T23:30:00Z"},
		{"daily: saturday evening CST to sunday 09:00 CDT", "2026-03-08T00:30:00Z", daily, "America/Chicago", "2026-03-08T14:00:00Z"},
		{"daily: to sunday 09:00 EDT", "2026-03-08T04:00:00Z", daily, "America/New_York", "2026-03-08T13:00:00Z"},
		{"daily: saturday evening CDT to sunday 09:00 CST", "2026-11-01T00:00:00Z", daily, "America/Chicago", "2026-11-01T15:00:00Z"},
		{"daily: to sunday 09:00 EST", "2026-11-01T03:00:00Z", daily, "America/New_York", "2026-11-01T14:00:00Z"},
		{"daily: from in the skipped hour opens at 03:00 CDT", "2026-03-08T07:30:00Z", Window{Days: []string{"all"}, From: "02:30", To: "04:00"}, "America/Chicago", "2026-03-08T08:00:00Z"},
		{"daily: window wholly in the skipped hour waits a day", "2026-03-08T07:30:00Z", Window{Days: []string{"all"}, From: "02:10", To: "02:50"}, "America/Chicago", "2026-03-09T07:10:00Z"},
		{"daily: a from that occurs twice opens at the first (CDT)", "2026-11-01T05:00:00Z", Window{Days: []string{"all"}, From: "01:30", To: "03:00"}, "America/Chicago", "2026-11-01T06:30:00Z"},
		{"daily: second 01:10 (CST) is inside a 01:00-02:00 window", "2026-11-01T07:10:00Z", Window{Days: []string{"all"}, From: "01:00", To: "02:00"}, "America/Chicago", "2026-11-01T07:10:00Z"},

		// Asia/Kolkata, +05:30 all year.
		{"kolkata: friday 18:30 IST to monday 09:00 IST", "2026-01-09T13:00:00Z", weekdays, "Asia/Kolkata", "2026-01-12T03:30:00Z"},
		{"kolkata: 08:59 IST to 09:00 IST", "2026-01-07T03:29:00Z", weekdays, "Asia/Kolkata", "2026-01-07T03:30:00Z"},
		{"kolkata: exactly 18:00 IST is outside", "2026-01-07T12:30:00Z", weekdays, "Asia/Kolkata", "2026-01-08T03:30:00Z"},

		// Europe/London: GMT in winter, BST in summer.
		{"london: winter 08:00 GMT to 09:00 GMT", "2026-01-07T08:00:00Z", weekdays, "Europe/London", "2026-01-07T09:00:00Z"},
		{"london: summer 08:00 BST to 09:00 BST", "2026-07-01T07:00:00Z", weekdays, "Europe/London", "2026-07-01T08:00:00Z"},
		{"london: from in the skipped hour opens at 02:00 BST", "2026-03-29T00:00:00Z", Window{Days: []string{"all"}, From: "01:30", To: "03:00"}, "Europe/London", "2026-03-29T01:00:00Z"},
		{"london: a from that occurs twice opens at the first (BST)", "2026-10-24T23:00:00Z", Window{Days: []string{"all"}, From: "01:30", To: "03:00"}, "Europe/London", "2026-10-25T00:30:00Z"},

		// America/Santiago skips from 00:00 to 01:00 on Sunday 2026-09-06.
		{"santiago: a from at a skipped midnight opens at 01:00", "2026-09-05T16:00:00Z", Window{Days: []string{"sun"}, From: "00:00", To: "06:00"}, "America/Santiago", "2026-09-06T04:00:00Z"},

		{"weekends: wednesday to saturday 10:00 UTC", "2026-01-07T12:00:00Z", weekends, "UTC", "2026-01-10T10:00:00Z"},
		{"to 24:00 covers the whole evening", "2026-01-07T23:59:00Z", Window{Days: []string{"all"}, From: "20:00", To: "24:00"}, "UTC", "2026-01-07T23:59:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NextOpening(mustTime(t, tc.t), tc.w, mustZone(t, tc.zone))
			if err != nil {
				t.Fatalf("NextOpening: %v", err)
			}
			if want := mustTime(t, tc.want); !got.Equal(want) {
				t.Errorf("NextOpening(%s) = %s, want %s", tc.t, got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestNextOpeningNilZoneIsUTC(t *testing.T) {
	got, err := NextOpening(mustTime(t, "2026-01-07T07:00:00Z"), Window{From: "09:00", To: "18:00"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustTime(t, "2026-01-07T09:00:00Z"); !got.Equal(want) {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNextOpeningRejectsBadWindows(t *testing.T) {
	for _, w := range []Window{
		{From: "9:00", To: "18:00"},
		{From: "09:00", To: "18:60"},
		{From: "24:00", To: "24:00"},
		{From: "18:00", To: "09:00"},
		{From: "09:00", To: "09:00"},
		{Days: []string{"thursday"}, From: "09:00", To: "18:00"},
		{Days: []string{"MON"}, From: "09:00", To: "18:00"},
	} {
		_, err := NextOpening(mustTime(t, "2026-01-07T07:00:00Z"), w, time.UTC)
		if !errors.Is(err, ErrWindow) {
			t.Errorf("window %+v: err = %v, want ErrWindow", w, err)
		}
	}
}

func TestNextDayStart(t *testing.T) {
	tests := []struct{ name, t, zone, want string }{
		{"utc: monday noon to tuesday 00:00", "2026-01-05T12:00:00Z", "UTC", "2026-01-06T00:00:00Z"},
		{"utc: exactly midnight is today, so tomorrow", "2026-01-06T00:00:00Z", "UTC", "2026-01-07T00:00:00Z"},
		{"utc: a second before midnight", "2026-01-05T23:59:59Z", "UTC", "2026-01-06T00:00:00Z"},
		{"chicago: the calendar day is chicago's", "2026-01-06T03:00:00Z", "America/Chicago", "2026-01-06T06:00:00Z"},
		{"chicago: saturday CST to sunday 00:00 CST, the change day", "2026-03-07T18:00:00Z", "America/Chicago", "2026-03-08T06:00:00Z"},
		{"chicago: sunday, the change day, to monday 00:00 CDT", "2026-03-08T18:00:00Z", "America/Chicago", "2026-03-09T05:00:00Z"},
		{"chicago: sunday, back to CST, to monday 00:00 CST", "2026-11-01T18:00:00Z", "America/Chicago", "2026-11-02T06:00:00Z"},
		{"kolkata", "2026-01-05T18:29:00Z", "Asia/Kolkata", "2026-01-05T18:30:00Z"},
		// Chile skips from 00:00 to 01:00 on 2026-09-06: that day starts at 01:00 −03.
		{"santiago: a skipped midnight starts the day at 01:00", "2026-09-05T16:00:00Z", "America/Santiago", "2026-09-06T04:00:00Z"},
		// And sets 24:00 back to 23:00 on 2026-04-04: 23:30 occurs twice.
		{"santiago: first 23:30 to the one midnight", "2026-04-05T02:30:00Z", "America/Santiago", "2026-04-05T04:00:00Z"},
		{"santiago: second 23:30 to the one midnight", "2026-04-05T03:30:00Z", "America/Santiago", "2026-04-05T04:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nextDayStart(mustTime(t, tc.t), mustZone(t, tc.zone))
			if want := mustTime(t, tc.want); !got.Equal(want) {
				t.Errorf("nextDayStart(%s) = %s, want %s", tc.t, got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestOffsetZone(t *testing.T) {
	tests := []struct {
		in   string
		secs int // offset east of UTC
		ok   bool
	}{
		{"+05:30", 5*3600 + 1800, true},
		{"-06:00", -6 * 3600, true},
		{"+00:00", 0, true},
		{"-00:00", 0, true},
		{"Z", 0, true},
		{"z", 0, true},
		{"+14:00", 14 * 3600, true},
		{"-09:30", -(9*3600 + 1800), true},
		{"", 0, false},
		{"+5:30", 0, false},
		{"05:30", 0, false},
		{"+0530", 0, false},
		{"+05:30:00", 0, false},
		{"+24:00", 0, false},
		{"+05:60", 0, false},
		{"IST", 0, false},
		{"UTC", 0, false},
		{"+05-30", 0, false},
		{"+0a:30", 0, false},
	}
	at := mustTime(t, "2026-01-05T12:00:00Z")
	for _, tc := range tests {
		loc, err := offsetZone(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("offsetZone(%q) err = %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if _, secs := at.In(loc).Zone(); secs != tc.secs {
			t.Errorf("offsetZone(%q) is %ds east of UTC, want %d", tc.in, secs, tc.secs)
		}
	}
}
