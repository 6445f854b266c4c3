// @generated automatically by Diesel CLI.

diesel::table! {
    sessions (id_hash) {
        id_hash -> Bytea,
        user_id -> Nullable<Uuid>,
        data -> Jsonb,
        expires_at -> Timestamptz,
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

diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(sessions, users,);
