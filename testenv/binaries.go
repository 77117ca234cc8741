package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// pgLibGlob is where Debian's postgresql packages put the server binaries,
// one folder per major version.
const pgLibGlob = "/usr/lib/postgresql/*/bin"

const (
	aptPostgres = "apt-get install -y postgresql (or run scripts/ensure-deps.sh)"
	aptRedis    = "apt-get install -y redis-server (or run scripts/ensure-deps.sh)"
)

// pgBinaries are the PostgreSQL programs this package runs. pg_ctl is not
// among them: the postmaster is started directly as our child so that it
// dies with us (pg_ctl start would detach it), and stopping it the way
// `pg_ctl stop -m fast` does is sending it SIGINT.
type pgBinaries struct {
	initdb   string
	postgres string
}

// findPostgres looks for initdb and postgres in one folder, so both come from
// the same major version: first the folder of the initdb found in pathEnv
// (symlinks resolved), then the folders matching libGlob, newest version first.
func findPostgres(pathEnv, libGlob string) (pgBinaries, error) {
	var dirs []string
	if p, err := lookPath("initdb", pathEnv); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	lib, _ := filepath.Glob(libGlob)
	sort.SliceStable(lib, func(i, j int) bool { return pgVersion(lib[i]) > pgVersion(lib[j]) })
	dirs = append(dirs, lib...)
	for _, dir := range dirs {
		b := pgBinaries{initdb: filepath.Join(dir, "initdb"), postgres: filepath.Join(dir, "postgres")}
		if isExecutable(b.initdb) && isExecutable(b.postgres) {
			return b, nil
		}
	}
	return pgBinaries{}, fmt.Errorf("%w: initdb and postgres not found in PATH or %s; install them with: %s",
		ErrNotInstalled, libGlob, aptPostgres)
}

// pgVersion reads the major version from /usr/lib/postgresql/<v>/bin; 0 if
// the folder is not named by a number.
func pgVersion(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return 0
	}
	return v
}

// redisFallbacks are where Debian's redis-server package puts the server, for
// a PATH that lacks /usr/bin.
var redisFallbacks = []string{"/usr/bin/redis-server"}

// findRedis looks for redis-server in pathEnv, then in fallbacks.
func findRedis(pathEnv string, fallbacks []string) (string, error) {
	if p, err := lookPath("redis-server", pathEnv); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: redis-server not found in PATH or %s; install it with: %s",
		ErrNotInstalled, strings.Join(fallbacks, ", "), aptRedis)
}

// lookPath is exec.LookPath over an explicit PATH value.
func lookPath(name, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pgCredential is the user PostgreSQL runs as. initdb and postgres refuse to
// run as root, so when we are root they run as the `postgres` system user that
// Debian's package creates; otherwise as ourselves (nil).
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, PostgreSQL must run as the postgres system user, which does not exist (%v); install it with: %s",
			ErrNotInstalled, err, aptPostgres)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("testenv: postgres user ids: %w", err)
	}
	// No supplementary groups: Groups empty makes the child drop root's.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// checkReachable reports a clear error when the user cred cannot enter dir
// (every folder above it needs search permission for that user), instead of
// initdb's less direct "could not change directory" later.
func checkReachable(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("testenv: folder path: %w", err)
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("testenv: folder: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var can bool
		switch {
		case st.Uid == cred.Uid:
			can = mode&0o100 != 0
		case st.Gid == cred.Gid:
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			return fmt.Errorf("testenv: the postgres user (uid %d) cannot enter %s (mode %v); pass a folder it can reach, or \"\" for %s",
				cred.Uid, p, mode, os.TempDir())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func addrInUse(log string) bool {
	return strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind")
}
