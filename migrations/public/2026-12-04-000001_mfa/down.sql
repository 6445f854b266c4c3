ALTER TABLE workspaces DROP COLUMN require_mfa;
DROP TABLE mfa_recovery_codes;
DROP TABLE mfa_totp;
