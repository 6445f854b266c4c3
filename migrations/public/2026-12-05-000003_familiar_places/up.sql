-- Where each account has signed in before (`fluxi_core::accounts::familiar`): its browsers
-- (SHA-256 of the device cookie's id) and its client networks (keyed pseudonyms). Failed
-- sign-ins from elsewhere cannot lock the owner out of these. Forgotten 180 days after the
-- last sign-in from them.
CREATE TABLE familiar_devices (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_hash BYTEA NOT NULL,
    last_signed_in_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, device_hash)
);
CREATE INDEX familiar_devices_last_signed_in_at ON familiar_devices (last_signed_in_at);

CREATE TABLE familiar_networks (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    network_pn BYTEA NOT NULL,
    last_signed_in_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, network_pn)
);
CREATE INDEX familiar_networks_last_signed_in_at ON familiar_networks (last_signed_in_at);
