-- +goose Up
-- No query finds runs by their event (a run's event is read from the run),
-- and events are never deleted, so the foreign key never looks for the
-- runs of one either. The index still took an entry for every run written
-- and for every non-HOT update of one: two per notice.
DROP INDEX runs_event;

-- +goose Down
CREATE INDEX runs_event ON runs (event_id);
