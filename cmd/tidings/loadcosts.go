package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// pgCounters are the database's transaction counters (pg_stat_database)
// and, read when the window starts, its tables' write counters.
type pgCounters struct {
	Commits, Rollbacks int64
	Writes             []tableWrites
}

// statement is one normalised statement and how often it ran.
type statement struct {
	Calls  int64
	MS     float64 // execution time, lock waits included
	Nested bool    // run by a trigger (a foreign-key check) or a function, not sent by a client
	Query  string  // pg_stat_statements' text: values replaced by $n, cut to 100 characters
}

// pgCosts is what serve and worker asked of Postgres in the window.
type pgCosts struct {
	Statements int64   // calls the services sent (top level)
	TxControl  int64   // of which BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE
	Nested     int64   // calls run inside those (track=all): foreign-key checks, functions
	ExecMS     float64 // execution time of the top-level statements, lock waits included
	Commits    int64
	Rollbacks  int64
	Top        []statement // by calls
	TopTime    []statement // by time
}

// resetCosts empties pg_stat_statements and reads the transaction counters;
// both from the postgres database as the load command's own user.
func (s *procStack) resetCosts(ctx context.Context) (pgCounters, error) {
	if _, err := s.stats.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return pgCounters{}, err
	}
	c, err := s.counters(ctx)
	if err != nil {
		return c, err
	}
	conn, err := pgx.Connect(ctx, s.roleURL(loadDatabase))
	if err != nil {
		return c, err
	}
	defer conn.Close(context.Background())
	c.Writes, err = readTableWrites(ctx, conn)
	return c, err
}

func (s *procStack) counters(ctx context.Context) (c pgCounters, err error) {
	err = s.stats.QueryRow(ctx, `SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1`, loadDatabase).Scan(&c.Commits, &c.Rollbacks)
	return c, err
}

// costs reads what the services' database user ran in the Tidings database
// since resetCosts. Call it once serve and worker have exited: a backend
// reports its transaction counts when it ends, not at every commit.
func (s *procStack) costs(ctx context.Context, before pgCounters) (pgCosts, error) {
	var c pgCosts
	// Wait for the services' backends to end (and so report their counts).
	for deadline := time.Now().Add(15 * time.Second); ; {
		var n int
		if err := s.stats.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2`, loadDatabase, s.PG.User).Scan(&n); err != nil {
			return c, err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("%d connections of serve and worker still open after they exited", n)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return c, err
		}
	}
	after, err := s.counters(ctx)
	if err != nil {
		return c, err
	}
	c.Commits, c.Rollbacks = after.Commits-before.Commits, after.Rollbacks-before.Rollbacks
	const mine = `s.userid = (SELECT oid FROM pg_roles WHERE rolname = $1) AND s.dbid = (SELECT oid FROM pg_database WHERE datname = $2)`
	err = s.stats.QueryRow(ctx, `SELECT coalesce(sum(calls) FILTER (WHERE toplevel), 0)::bigint,
		coalesce(sum(calls) FILTER (WHERE toplevel AND query ~* '^\s*(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\M'), 0)::bigint,
		coalesce(sum(calls) FILTER (WHERE NOT toplevel), 0)::bigint,
		coalesce(sum(total_exec_time) FILTER (WHERE toplevel), 0)::float8
		FROM pg_stat_statements s WHERE `+mine, s.PG.User, loadDatabase).Scan(&c.Statements, &c.TxControl, &c.Nested, &c.ExecMS)
	if err != nil {
		return c, err
	}
	if c.Top, err = s.topStatements(ctx, mine, "calls", 10); err != nil {
		return c, err
	}
	c.TopTime, err = s.topStatements(ctx, mine, "total_exec_time", 5)
	return c, err
}

// topStatements lists the services' statements with the most of by.
func (s *procStack) topStatements(ctx context.Context, mine, by string, n int) ([]statement, error) {
	rows, err := s.stats.Query(ctx, `SELECT calls, total_exec_time, NOT toplevel, regexp_replace(query, '\s+', ' ', 'g')
		FROM pg_stat_statements s WHERE `+mine+` ORDER BY `+by+` DESC, query LIMIT `+strconv.Itoa(n), s.PG.User, loadDatabase)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var top []statement
	for rows.Next() {
		var st statement
		if err := rows.Scan(&st.Calls, &st.MS, &st.Nested, &st.Query); err != nil {
			return nil, err
		}
		st.Query = cut(st.Query, 100)
		top = append(top, st)
	}
	return top, rows.Err()
}

// cut shortens s to at most n characters.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// afterRun is what the Tidings database holds after the run and what was
// written to it from the window's start until serve and worker stopped,
// read once the costs are in (these queries are the load command's own).
type afterRun struct {
	Notices map[string]int64
	Events  int64
	DBBytes int64
	Writes  []tableWrites // by rows written, most first
}

// tableWrites is what was written to one table (pg_stat_user_tables) and
// how many indexes each inserted row had to enter.
type tableWrites struct {
	Table                      string
	Inserted, Updated, Deleted int64
	HOT                        int64 // updates that changed no indexed column and stayed on their page
	Indexes                    int
	// Toast is the chunks inserted into the table's TOAST table (values
	// moved out of line, such as an event's sealed record), each with an
	// entry in its one index.
	Toast int64
}

func (s *procStack) afterRun(ctx context.Context, before []tableWrites) (afterRun, error) {
	a := afterRun{Notices: map[string]int64{}}
	if err := s.stats.QueryRow(ctx, `SELECT pg_database_size($1)`, loadDatabase).Scan(&a.DBBytes); err != nil {
		return a, err
	}
	conn, err := pgx.Connect(ctx, s.roleURL(loadDatabase))
	if err != nil {
		return a, err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&a.Events); err != nil {
		return a, err
	}
	nrows, err := conn.Query(ctx, `SELECT status, count(*) FROM notices GROUP BY status`)
	if err != nil {
		return a, err
	}
	defer nrows.Close()
	for nrows.Next() {
		var status string
		var n int64
		if err := nrows.Scan(&status, &n); err != nil {
			return a, err
		}
		a.Notices[status] = n
	}
	if err := nrows.Err(); err != nil {
		return a, err
	}
	now, err := readTableWrites(ctx, conn)
	a.Writes = writesSince(before, now)
	return a, err
}

// writesSince is what was written between two readings, most rows first.
func writesSince(before, now []tableWrites) []tableWrites {
	was := map[string]tableWrites{}
	for _, w := range before {
		was[w.Table] = w
	}
	var out []tableWrites
	for _, w := range now {
		b := was[w.Table]
		w.Inserted, w.Updated, w.Deleted, w.HOT = w.Inserted-b.Inserted, w.Updated-b.Updated, w.Deleted-b.Deleted, w.HOT-b.HOT
		w.Toast -= b.Toast
		if w.Inserted+w.Updated+w.Deleted+w.Toast > 0 {
			out = append(out, w)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Inserted+out[i].Updated+out[i].Deleted > out[j].Inserted+out[j].Updated+out[j].Deleted
	})
	return out
}

// readTableWrites reads every table's write counters.
func readTableWrites(ctx context.Context, conn *pgx.Conn) ([]tableWrites, error) {
	rows, err := conn.Query(ctx, `SELECT t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_del, t.n_tup_hot_upd,
			(SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid)::int, coalesce(tt.n_tup_ins, 0)
		FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
		LEFT JOIN pg_stat_all_tables tt ON tt.relid = c.reltoastrelid
		ORDER BY t.relname`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []tableWrites
	for rows.Next() {
		var w tableWrites
		if err := rows.Scan(&w.Table, &w.Inserted, &w.Updated, &w.Deleted, &w.HOT, &w.Indexes, &w.Toast); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// procStat is /proc/PID/stat after the command name: state, ppid, … (so
// field n of proc(5) is at n-3); nil when the process is gone.
func procStat(pid int) []string {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(raw)
	// The command name may hold spaces and parentheses.
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// cpuUse is CPU time split into user time and kernel (system) time, as
// the kernel accounts it: the kernel work a process causes (system calls,
// page faults, being scheduled) is in its system time, but interrupt work
// (the network stack's softirqs among it) lands on whichever process is
// running when it comes.
type cpuUse struct{ user, sys time.Duration }

func (c cpuUse) total() time.Duration { return c.user + c.sys }

func (c cpuUse) plus(o cpuUse) cpuUse  { return cpuUse{c.user + o.user, c.sys + o.sys} }
func (c cpuUse) minus(o cpuUse) cpuUse { return cpuUse{c.user - o.user, c.sys - o.sys} }

// procCPU is a process's CPU time, its reaped children's included.
func procCPU(pid int) cpuUse {
	// utime, stime, cutime, cstime are fields 14-17.
	f := procStat(pid)
	if len(f) < 15 {
		return cpuUse{}
	}
	var ticks [4]int64
	for i, v := range f[11:15] {
		ticks[i], _ = strconv.ParseInt(v, 10, 64)
	}
	unit := time.Second / clockTicks
	return cpuUse{user: time.Duration(ticks[0]+ticks[2]) * unit, sys: time.Duration(ticks[1]+ticks[3]) * unit}
}

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// treeCPU is the CPU time of pid and of every live descendant (a
// postmaster's backends); descendants that ended are in their parent's.
func treeCPU(pid int) cpuUse {
	total := procCPU(pid)
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		kid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(kid); len(f) > 1 {
			parent[kid], _ = strconv.Atoi(f[1])
		}
	}
	var walk func(int)
	walk = func(p int) {
		for kid, pp := range parent {
			if pp == p {
				total = total.plus(procCPU(kid))
				walk(kid)
			}
		}
	}
	walk(pid)
	return total
}

// selfCPU is this process's CPU time: the clients, the baselines' senders
// and the mail catcher.
func selfCPU() cpuUse {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return cpuUse{}
	}
	return cpuUse{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

// niceSpan is the range of nice values of a process's threads (on Linux
// a nice value belongs to a thread), and how many threads it read.
type niceSpan struct{ Low, High, Threads int }

func (n niceSpan) String() string {
	if n.Low == n.High {
		return fmt.Sprintf("all %d threads at nice %d", n.Threads, n.Low)
	}
	return fmt.Sprintf("%d threads at nice %d to %d", n.Threads, n.Low, n.High)
}

// threadsNice reads the nice value of each thread of process pid; the
// zero niceSpan when none could be read.
func threadsNice(pid int) niceSpan {
	tids, err := threadIDs(strconv.Itoa(pid))
	if err != nil {
		return niceSpan{}
	}
	var n niceSpan
	for _, tid := range tids {
		v, err := threadNice(tid)
		if err != nil {
			continue // the thread has exited
		}
		if n.Threads == 0 || v < n.Low {
			n.Low = v
		}
		if n.Threads == 0 || v > n.High {
			n.High = v
		}
		n.Threads++
	}
	return n
}

// peakRSS is a process's peak resident set (VmHWM), in bytes.
func peakRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// residentSplit is a process's resident set now, split into anonymous
// memory (heap, stacks: its own) and file-backed pages (the mapped
// tidings binary, which every process of the same file shares with the
// others in the page cache), in bytes.
type residentSplit struct{ Anon, File int64 }

func residentNow(pid int) residentSplit {
	var r residentSplit
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return r
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "RssAnon":
			r.Anon = kb << 10
		case "RssFile":
			r.File = kb << 10
		}
	}
	return r
}

// machine describes the computer: CPU model, cores, memory.
func machine() string {
	model := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "unknown memory"
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf("%.1f GiB memory", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s, %s/%s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH)
}

// commit names the code measured: git describe in the current folder, or
// the revision the binary was built from.
func commit() string {
	if out, err := exec.Command("git", "describe", "--always", "--dirty", "--tags").Output(); err == nil {
		return strings.TrimSpace(string(out)) + " (git describe)"
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return rev + dirty + " (build info)"
		}
	}
	return "unknown"
}
