//! Diesel definitions of the tenant tables. Unqualified: they resolve through the
//! transaction's search_path, which only `scoped_transaction` sets. Private on purpose.

diesel::table! {
    notes (id) {
        id -> Uuid,
        title -> Text,
        body -> Text,
        created_by -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    integration_connections (id) {
        id -> Uuid,
        provider -> Text,
        owner_id -> Uuid,
        kind -> Text,
        status -> Text,
        key_version -> Int4,
        account -> Nullable<Bytea>,
        access_token -> Nullable<Bytea>,
        refresh_token -> Nullable<Bytea>,
        api_key -> Nullable<Bytea>,
        key_last4 -> Nullable<Text>,
        scopes -> Array<Text>,
        access_expires_at -> Nullable<Timestamptz>,
        refresh_lease -> Nullable<Uuid>,
        refresh_lease_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        updated_by -> Uuid,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    assistant_messages (id) {
        id -> Uuid,
        seq -> Int8,
        owner_id -> Uuid,
        kind -> Text,
        body -> Jsonb,
        flagged -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    assistant_proposals (id) {
        id -> Uuid,
        seq -> Int8,
        owner_id -> Uuid,
        message_id -> Uuid,
        tool -> Text,
        arguments -> Jsonb,
        summary -> Text,
        subject_name -> Nullable<Text>,
        consequences -> Array<Text>,
        sensitive -> Bool,
        after_flagged -> Bool,
        status -> Text,
        created_at -> Timestamptz,
        decided_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    assistant_alerts (id) {
        id -> Uuid,
        events -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    assistant_settings (singleton) {
        singleton -> Bool,
        enabled -> Bool,
        changed_by -> Uuid,
        changed_at -> Timestamptz,
    }
}

diesel::joinable!(assistant_proposals -> assistant_messages (message_id));
diesel::allow_tables_to_appear_in_same_query!(assistant_messages, assistant_proposals);
