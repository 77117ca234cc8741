package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tidings-health/tidings/fault"
)

// The hot paths write many rows per statement: arrays passed as one
// parameter each and unnested (`INSERT … SELECT * FROM unnest($1::text[],
// …)`). GORM would expand a slice argument into a list, so these statements
// go to the connection (or the transaction) directly, with PostgreSQL's own
// $n placeholders, through pgx, which encodes Go slices as arrays.

// exec runs a statement in the store's transaction, if any, prepared once
// per connection: its arrays, their types known, travel in binary (a
// batch's sealed resources would otherwise go as hex text).
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := s.db.Statement.ConnPool.ExecContext(ctx, query, args...)
	return res, scrub(err)
}

// query is exec for a statement that returns rows; the caller closes them.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := s.db.Statement.ConnPool.QueryContext(ctx, query, args...)
	return rows, scrub(err)
}

// execPlanned runs a statement planned for the arrays it is given, each
// time (pgx's exec mode: an unnamed statement), never with a cached generic
// plan: for an UPDATE that joins a batch to a large table, a plan made for
// other arrays, or while the table was small, can turn index lookups into
// scans of the whole table.
func (s *Store) execPlanned(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := s.db.Statement.ConnPool.ExecContext(ctx, query, append([]any{pgx.QueryExecModeExec}, args...)...)
	return res, scrub(err)
}

// queryPlanned is execPlanned for a statement that returns rows.
func (s *Store) queryPlanned(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := s.db.Statement.ConnPool.QueryContext(ctx, query, append([]any{pgx.QueryExecModeExec}, args...)...)
	return rows, scrub(err)
}

// scrub keeps values out of database errors and says whose fault they are.
// PostgreSQL's data exceptions (SQLSTATE class 22, e.g. "invalid input
// syntax for type bigint: \"...\"") quote the offending value, and errors
// travel on into logs and task error strings: each is replaced by one that
// names the code and column only. The value came from the caller (a NUL
// byte or invalid UTF-8 in a path segment or a field, a number out of
// range), and the same value fails again, so it is fault.Invalid: a 400,
// not a 500. The statements GORM runs are scrubbed by a callback
// (scrubValueErrors); the others, where they run.
func scrub(err error) error {
	var pg *pgconn.PgError
	if err != nil && errors.As(err, &pg) && strings.HasPrefix(pg.Code, "22") {
		return fault.New(fault.Invalid, fmt.Sprintf("database rejected a value (SQLSTATE %s, column %q)", pg.Code, pg.ColumnName))
	}
	return err
}

// scanInt64s reads a one-column result of ids.
func scanInt64s(rows *sql.Rows) ([]int64, error) {
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
