package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/migrations"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate up|down|status", "Applies (up), rolls back one (down) or lists (status) the SQL migrations\nembedded in the binary, against TIDINGS_DATABASE_URL.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{"migrate needs one of: up, down, status"}
	}
	cfg, err := loadConfig(config.RoleMigrate)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	p, db, err := migrations.Provider(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	switch fs.Arg(0) {
	case "up":
		res, err := p.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration)
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		v, _ := p.GetDBVersion(ctx)
		fmt.Fprintf(stdout, "database at version %d\n", v)
	case "down":
		r, err := p.Down(ctx)
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
	case "status":
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		for _, s := range st {
			at := "pending"
			if !s.AppliedAt.IsZero() {
				at = "applied " + s.AppliedAt.Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(stdout, "%5d  %-30s %s\n", s.Source.Version, s.Source.Path, at)
		}
	default:
		return usageError{fmt.Sprintf("unknown migrate action %q (want up, down or status)", fs.Arg(0))}
	}
	log.Debug("migrate done")
	return nil
}
