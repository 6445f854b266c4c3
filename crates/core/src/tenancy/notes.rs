//! Notes: the first tenant data (each workspace's own table).
//!
//! Like every tenant function, each one checks the caller's permission and validates its
//! input itself: the capability proves membership, not what the role may do.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::schema::notes;
use super::scoped_transaction;
use crate::workspaces::{InvalidInput, Permission, WorkspaceAccess, WorkspaceError};

pub const TITLE_MAX_CHARS: usize = 200;
pub const BODY_MAX_CHARS: usize = 10_000;

/// A note's title (trimmed, 1–200 characters) and body (at most 10,000 characters).
pub fn validate_note(title: &str, body: &str) -> Result<(String, String), InvalidInput> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > TITLE_MAX_CHARS {
        return Err(InvalidInput::NoteTitle);
    }
    if body.chars().count() > BODY_MAX_CHARS {
        return Err(InvalidInput::NoteBodyTooLong);
    }
    Ok((title.to_string(), body.to_string()))
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, PartialEq, Eq)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
pub struct Note {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub created_by: Uuid,
    pub created_at: OffsetDateTime,
}

pub async fn list_notes(conn: &mut AsyncPgConnection, access: &WorkspaceAccess) -> Result<Vec<Note>, WorkspaceError> {
    access.require(Permission::Read)?;
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            notes::table
                .select(Note::as_select())
                .order((notes::created_at.desc(), notes::id.desc()))
                .limit(100)
                .load(c)
                .await
                .map_err(WorkspaceError::from)
        }
        .scope_boxed()
    })
    .await
}

pub async fn create_note(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    title: &str,
    body: &str,
) -> Result<Note, WorkspaceError> {
    access.require(Permission::Write)?;
    let (title, body) = validate_note(title, body)?;
    let author = access.user_id();
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            diesel::insert_into(notes::table)
                .values((notes::title.eq(title), notes::body.eq(body), notes::created_by.eq(author)))
                .returning(Note::as_returning())
                .get_result(c)
                .await
                .map_err(WorkspaceError::from)
        }
        .scope_boxed()
    })
    .await
}

pub async fn delete_note(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    id: Uuid,
) -> Result<bool, WorkspaceError> {
    access.require(Permission::Write)?;
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            let n = diesel::delete(notes::table.find(id)).execute(c).await?;
            Ok::<_, WorkspaceError>(n == 1)
        }
        .scope_boxed()
    })
    .await
}
