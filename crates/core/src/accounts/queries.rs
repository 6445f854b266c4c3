//! `users` table queries.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::users;

/// A person's account, without their password hash: this is what every signed-in
/// request loads, and the hash is needed only by sign-in and step-up checks, which load
/// it on their own ([`find_login_by_email`], [`find_password_hash`]).
#[derive(Debug, Clone, Queryable, Selectable, Identifiable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub email_normalized: String,
    pub display_name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// When the account proved it receives mail at `email` (`None`: not yet).
    #[serde(default)]
    pub email_verified_at: Option<OffsetDateTime>,
    /// Sessions made under an older value have ended (`crate::sessions` bumps it).
    #[serde(default)]
    pub sessions_epoch: i32,
}

/// A stored password hash (PHC string). Its `Debug` output is redacted, so that a
/// logged struct or error can never carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPasswordHash(String);

impl StoredPasswordHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoredPasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredPasswordHash(<redacted>)")
    }
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
    diesel::insert_into(users::table).values(&new).returning(User::as_returning()).get_result(conn).await.map_err(|e| {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => CreateUserError::EmailTaken,
            other => CreateUserError::Database(other),
        }
    })
}

/// The account with this (normalized) email and its password hash, for sign-in.
/// The account, its password hash and whether it has a second factor, in one query: the
/// answer to "is a code needed" is known before the password is checked, so a right
/// password costs no more time with MFA than without.
pub async fn find_login_by_email(
    conn: &mut AsyncPgConnection,
    email_normalized: &str,
) -> QueryResult<Option<(User, StoredPasswordHash, bool)>> {
    use crate::schema::mfa_totp;
    let found: Option<(User, String, bool)> = users::table
        .filter(users::email_normalized.eq(email_normalized))
        .select((
            User::as_select(),
            users::password_hash,
            diesel::dsl::exists(
                mfa_totp::table.filter(mfa_totp::user_id.eq(users::id)).filter(mfa_totp::confirmed_at.is_not_null()),
            ),
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(found.map(|(user, hash, mfa)| (user, StoredPasswordHash(hash), mfa)))
}

/// The password hash of an account, for step-up checks of a signed-in person.
pub async fn find_password_hash(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<StoredPasswordHash>> {
    let hash: Option<String> = users::table.find(id).select(users::password_hash).first(conn).await.optional()?;
    Ok(hash.map(StoredPasswordHash))
}

pub async fn find_user_by_id(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table.find(id).select(User::as_select()).first(conn).await.optional()
}

/// Locks the account row of `id` until the transaction ends. Writers of an account's links
/// and password take it first, so that they queue behind each other instead of deadlocking.
pub async fn lock_account(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    users::table.find(id).select(users::id).for_update().first::<Uuid>(conn).await.map(|_| ())
}

/// Replaces the hash of `id` only if it is still `old` (a rehash at sign-in must not undo a
/// password change or reset that committed meanwhile).
pub async fn replace_password_hash_if_unchanged(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    old: &str,
    phc: &str,
) -> QueryResult<()> {
    diesel::update(users::table.find(id).filter(users::password_hash.eq(old)))
        .set((users::password_hash.eq(phc), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn update_password_hash(conn: &mut AsyncPgConnection, id: Uuid, phc: &str) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(phc), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::StoredPasswordHash;

    #[test]
    fn a_stored_hash_never_shows_in_debug_output() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        let hash = StoredPasswordHash(phc.into());
        let shown = format!("{hash:?} {:?}", Some((1, hash.clone())));
        assert!(!shown.contains("argon2") && !shown.contains("aGFzaGhhc2hoYXNo"), "{shown}");
        assert_eq!(hash.as_str(), phc);
    }
}
