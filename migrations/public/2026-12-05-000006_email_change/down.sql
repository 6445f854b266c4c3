DELETE FROM account_links WHERE purpose IN ('change_email', 'revert_email');
DROP INDEX account_links_address_normalized;
ALTER TABLE account_links DROP CONSTRAINT account_links_address_present;
ALTER TABLE account_links DROP COLUMN address_normalized;
ALTER TABLE account_links DROP COLUMN address;
ALTER TABLE account_links DROP CONSTRAINT account_links_purpose_check;
ALTER TABLE account_links ADD CONSTRAINT account_links_purpose_check
    CHECK (purpose IN ('verify_email', 'reset_password'));
