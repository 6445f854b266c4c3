-- Runs inside the workspace's own schema, as the workspace's role (which then owns
-- these tables). No schema qualifiers: search_path is the workspace schema only.
CREATE TABLE notes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body text NOT NULL DEFAULT '' CHECK (char_length(body) <= 10000),
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
