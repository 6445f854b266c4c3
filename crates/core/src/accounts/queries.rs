//! `users` table queries.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::users;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub email_normalized: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] DieselError),
}

/// Inserts a user; a duplicate normalized email (even under a concurrent sign-up) is
/// reported as `EmailTaken` by the unique constraint, never as a half-written row.
pub async fn create_user(conn: &mut AsyncPgConnection, new: NewUser<'_>) -> Result<User, CreateUserError> {
    diesel::insert_into(users::table)
        .values(&new)
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => CreateUserError::EmailTaken,
            other => CreateUserError::Database(other),
        })
}

pub async fn find_user_by_email(conn: &mut AsyncPgConnection, email_normalized: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::email_normalized.eq(email_normalized))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn find_user_by_id(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table.find(id).select(User::as_select()).first(conn).await.optional()
}

pub async fn update_password_hash(conn: &mut AsyncPgConnection, id: Uuid, phc: &str) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(phc), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await
        .map(|_| ())
}
