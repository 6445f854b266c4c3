-- Bumped when every other session of the account must end (sign out everywhere, a
-- password change that signs out the others, a reset): a session, or a sign-in under way,
-- made under an older value is signed out on its next request, even one that a request in
-- flight wrote back after its row was deleted.
ALTER TABLE users ADD COLUMN sessions_epoch INTEGER NOT NULL DEFAULT 0;
