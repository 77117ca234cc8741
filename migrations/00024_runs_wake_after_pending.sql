-- +goose Up
-- An engagement or a change of facts wakes a waiting run at once, unless
-- the run's sends are still being carried out (pending): the task sending
-- them owns the run until it records their outcome, and then set the next
-- wake-up from the wait's timeout alone, so an event that arrived in that
-- window (a portal view seconds after the mail) went unseen until the
-- timeout, days later. The flag remembers that window's wake-up; recording
-- the outcome makes the run due at once when it is set.
ALTER TABLE runs ADD COLUMN wake_after_pending boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE runs DROP COLUMN wake_after_pending;
