// @generated automatically by Diesel CLI.

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
    }
}

diesel::joinable!(invitations -> outbox_emails (mail_id));
diesel::joinable!(invitations -> workspaces (workspace_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(memberships -> workspaces (workspace_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(workspace_creations -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    invitations,
    memberships,
    outbox_emails,
    sessions,
    sign_in_failures,
    users,
    workspace_creations,
    workspaces,
);
