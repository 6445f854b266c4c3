-- The deployment's switch for the assistant (`server assistant off|on`): read at every
-- step of every question, so turning it off stops every instance at once. No row: on.
CREATE TABLE assistant_deployment (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled boolean NOT NULL,
    changed_at timestamptz NOT NULL
);
