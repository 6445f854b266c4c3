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
