DROP TABLE integration_revocations;
DROP TABLE integration_authorizations;
