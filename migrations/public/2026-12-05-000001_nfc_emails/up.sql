-- Emails are compared in Unicode normalization form C (`fluxi_core::text::nfc`). Stored
-- comparison forms typed decomposed are recomposed, unless another row already has, or
-- would get, the same composed form: those are left as they are, for an operator to
-- resolve (two accounts are never joined silently).
UPDATE users u SET email_normalized = normalize(u.email_normalized, NFC)
WHERE u.email_normalized IS NOT NFC NORMALIZED
  AND NOT EXISTS (
    SELECT 1 FROM users o
    WHERE o.id <> u.id AND normalize(o.email_normalized, NFC) = normalize(u.email_normalized, NFC)
  );

UPDATE invitations i SET email_normalized = normalize(i.email_normalized, NFC)
WHERE i.email_normalized IS NOT NFC NORMALIZED
  AND NOT EXISTS (
    SELECT 1 FROM invitations o
    WHERE o.id <> i.id AND o.workspace_id = i.workspace_id
      AND normalize(o.email_normalized, NFC) = normalize(i.email_normalized, NFC)
  );
