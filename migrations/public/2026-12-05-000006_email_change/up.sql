-- Changing the email address: a link to the new address confirms it, and a link to the
-- old one undoes it for a week. Both carry the address they are about.
ALTER TABLE account_links DROP CONSTRAINT account_links_purpose_check;
ALTER TABLE account_links ADD CONSTRAINT account_links_purpose_check
    CHECK (purpose IN ('verify_email', 'reset_password', 'change_email', 'revert_email'));
ALTER TABLE account_links ADD COLUMN address TEXT;
ALTER TABLE account_links ADD COLUMN address_normalized TEXT;
ALTER TABLE account_links ADD CONSTRAINT account_links_address_present
    CHECK ((purpose IN ('change_email', 'revert_email')) = (address IS NOT NULL AND address_normalized IS NOT NULL));
-- "Is this address held for an account that may take it back?" (sign-up, email change).
CREATE INDEX account_links_address_normalized ON account_links (address_normalized)
    WHERE address_normalized IS NOT NULL;
