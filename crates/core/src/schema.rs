// @generated automatically by Diesel CLI.

diesel::table! {
    account_links (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        purpose -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        replaced_at -> Nullable<Timestamptz>,
        address -> Nullable<Text>,
        address_normalized -> Nullable<Text>,
    }
}

diesel::table! {
    assistant_deployment (singleton) {
        singleton -> Bool,
        enabled -> Bool,
        changed_at -> Timestamptz,
    }
}

diesel::table! {
    audit_anchors (chain_id) {
        chain_id -> Uuid,
        seq -> Int8,
        hash -> Bytea,
        pruned_before -> Timestamptz,
        signature -> Bytea,
    }
}

diesel::table! {
    audit_chains (chain_id) {
        chain_id -> Uuid,
        last_seq -> Int8,
        last_hash -> Bytea,
        last_at -> Timestamptz,
    }
}

diesel::table! {
    audit_checkpoint_heads (chain_id, checkpoint_id) {
        chain_id -> Uuid,
        checkpoint_id -> Int8,
        seq -> Int8,
        hash -> Bytea,
    }
}

diesel::table! {
    audit_checkpoints (id) {
        id -> Int8,
        created_at -> Timestamptz,
        body -> Text,
        signature -> Bytea,
    }
}

diesel::table! {
    audit_events (chain_id, seq, occurred_at) {
        chain_id -> Uuid,
        seq -> Int8,
        occurred_at -> Timestamptz,
        workspace_id -> Nullable<Uuid>,
        account_id -> Nullable<Uuid>,
        actor_kind -> Text,
        actor_id -> Nullable<Uuid>,
        actor_email_pn -> Nullable<Bytea>,
        action -> Text,
        action_group -> Text,
        target_kind -> Text,
        target_id -> Nullable<Uuid>,
        outcome -> Text,
        request_id -> Nullable<Uuid>,
        network_pn -> Nullable<Bytea>,
        agent_pn -> Nullable<Bytea>,
        pseudonym_epoch -> Nullable<Int4>,
        detail -> Jsonb,
        hash -> Bytea,
    }
}

diesel::table! {
    audit_inbox (chain_id, id) {
        id -> Int8,
        chain_id -> Uuid,
        occurred_at -> Timestamptz,
        workspace_id -> Nullable<Uuid>,
        account_id -> Nullable<Uuid>,
        actor_kind -> Text,
        actor_id -> Nullable<Uuid>,
        actor_email_pn -> Nullable<Bytea>,
        action -> Text,
        action_group -> Text,
        target_kind -> Text,
        target_id -> Nullable<Uuid>,
        outcome -> Text,
        request_id -> Nullable<Uuid>,
        network_pn -> Nullable<Bytea>,
        agent_pn -> Nullable<Bytea>,
        pseudonym_epoch -> Nullable<Int4>,
        detail -> Jsonb,
    }
}

diesel::table! {
    familiar_devices (user_id, device_hash) {
        user_id -> Uuid,
        device_hash -> Bytea,
        last_signed_in_at -> Timestamptz,
    }
}

diesel::table! {
    familiar_networks (user_id, network_pn) {
        user_id -> Uuid,
        network_pn -> Bytea,
        last_signed_in_at -> Timestamptz,
    }
}

diesel::table! {
    integration_authorizations (state_hash) {
        state_hash -> Bytea,
        session_hash -> Bytea,
        user_id -> Uuid,
        workspace_id -> Uuid,
        provider -> Text,
        scopes -> Array<Nullable<Text>>,
        key_version -> Int4,
        pkce_verifier -> Bytea,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    integration_revocations (id) {
        id -> Uuid,
        workspace_id -> Uuid,
        owner_id -> Uuid,
        connection_id -> Uuid,
        provider -> Text,
        key_version -> Int4,
        access_token -> Nullable<Bytea>,
        refresh_token -> Nullable<Bytea>,
        account -> Nullable<Bytea>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        give_up_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    invitations (id) {
        id -> Uuid,
        workspace_id -> Uuid,
        email -> Text,
        email_normalized -> Text,
        role -> Text,
        token_hash -> Bytea,
        invited_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        accepted_at -> Nullable<Timestamptz>,
        accepted_by -> Nullable<Uuid>,
        revoked_at -> Nullable<Timestamptz>,
        mail_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    memberships (workspace_id, user_id) {
        workspace_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    mfa_recovery_codes (user_id, code_hash) {
        user_id -> Uuid,
        code_hash -> Bytea,
        key_version -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    mfa_totp (user_id) {
        user_id -> Uuid,
        secret_sealed -> Bytea,
        key_version -> Int4,
        confirmed_at -> Nullable<Timestamptz>,
        pending_until -> Nullable<Timestamptz>,
        last_step -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    outbox_emails (id) {
        id -> Uuid,
        recipient -> Text,
        subject -> Text,
        body -> Text,
        created_at -> Timestamptz,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        failed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    passkey_challenges (id) {
        id -> Uuid,
        purpose -> Text,
        user_id -> Nullable<Uuid>,
        state -> Jsonb,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    passkeys (id) {
        id -> Uuid,
        user_id -> Uuid,
        credential_id -> Bytea,
        name -> Text,
        passkey -> Jsonb,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    pending_sign_ups (token_hash) {
        token_hash -> Bytea,
        email -> Text,
        email_normalized -> Text,
        display_name -> Text,
        password_hash -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        password_attempts -> Int4,
    }
}

diesel::table! {
    rate_limits (key) {
        key -> Bytea,
        window_ends_at -> Timestamptz,
        count -> Int4,
    }
}

diesel::table! {
    sessions (id_hash) {
        id_hash -> Bytea,
        user_id -> Nullable<Uuid>,
        data -> Jsonb,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    sign_in_failures (key) {
        key -> Bytea,
        failures -> Int4,
        window_started_at -> Timestamptz,
        blocked_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        email_normalized -> Text,
        display_name -> Text,
        password_hash -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        email_verified_at -> Nullable<Timestamptz>,
        sessions_epoch -> Int4,
    }
}

diesel::table! {
    workspace_creations (id) {
        id -> Int8,
        user_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    workspaces (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        schema_name -> Text,
        role_name -> Text,
        tenant_version -> Text,
        created_at -> Timestamptz,
        require_mfa -> Bool,
    }
}

diesel::joinable!(account_links -> users (user_id));
diesel::joinable!(audit_checkpoint_heads -> audit_checkpoints (checkpoint_id));
diesel::joinable!(familiar_devices -> users (user_id));
diesel::joinable!(familiar_networks -> users (user_id));
diesel::joinable!(integration_authorizations -> users (user_id));
diesel::joinable!(integration_authorizations -> workspaces (workspace_id));
diesel::joinable!(invitations -> outbox_emails (mail_id));
diesel::joinable!(invitations -> workspaces (workspace_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(memberships -> workspaces (workspace_id));
diesel::joinable!(mfa_recovery_codes -> users (user_id));
diesel::joinable!(mfa_totp -> users (user_id));
diesel::joinable!(passkey_challenges -> users (user_id));
diesel::joinable!(passkeys -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(workspace_creations -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    account_links,
    assistant_deployment,
    audit_anchors,
    audit_chains,
    audit_checkpoint_heads,
    audit_checkpoints,
    audit_events,
    audit_inbox,
    familiar_devices,
    familiar_networks,
    integration_authorizations,
    integration_revocations,
    invitations,
    memberships,
    mfa_recovery_codes,
    mfa_totp,
    outbox_emails,
    passkey_challenges,
    passkeys,
    pending_sign_ups,
    rate_limits,
    sessions,
    sign_in_failures,
    users,
    workspace_creations,
    workspaces,
);
