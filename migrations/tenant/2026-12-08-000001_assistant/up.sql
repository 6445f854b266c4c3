-- The workspace assistant (docs/assistant.md). In the workspace's schema like all its
-- content: only the workspace's role reaches it, and deleting the workspace drops it.

-- Each person's own conversation. `body` is what was said, as the page shows it: the
-- person's words, or the answer after the output guard (never the model's raw text).
CREATE TABLE assistant_messages (
    id uuid PRIMARY KEY,
    -- Order of writing: several messages of one turn share a time.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    owner_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('question', 'answer', 'blocked', 'notice')),
    body jsonb NOT NULL,
    flagged boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);
CREATE INDEX assistant_messages_owner ON assistant_messages (owner_id, seq DESC);

-- Actions the model proposed, checked against the person's permissions, waiting for
-- their confirmation. `arguments` are the parsed, validated ones with what they were
-- checked against; `summary` says exactly what confirming will do, in fixed words and
-- verified addresses only; `subject_name` (a display name, text members write) is shown
-- apart from it; `consequences` are its side effects. Single use: a proposal leaves
-- 'pending' once.
CREATE TABLE assistant_proposals (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    owner_id uuid NOT NULL,
    message_id uuid NOT NULL REFERENCES assistant_messages (id) ON DELETE CASCADE,
    tool text NOT NULL,
    arguments jsonb NOT NULL,
    summary text NOT NULL,
    subject_name text,
    consequences text[] NOT NULL DEFAULT '{}',
    sensitive boolean NOT NULL,
    after_flagged boolean NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'executing', 'done', 'failed', 'dismissed', 'cancelled')),
    created_at timestamptz NOT NULL,
    decided_at timestamptz
);
CREATE INDEX assistant_proposals_message ON assistant_proposals (message_id);

-- Bursts of blocked messages or refused proposals, shown to the workspace's admins.
CREATE TABLE assistant_alerts (
    id uuid PRIMARY KEY,
    events integer NOT NULL,
    created_at timestamptz NOT NULL
);

-- The owners' switch. One row at most; no row means on.
CREATE TABLE assistant_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled boolean NOT NULL,
    changed_by uuid NOT NULL,
    changed_at timestamptz NOT NULL
);
