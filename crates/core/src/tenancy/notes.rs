//! Notes: the first tenant data (each workspace's own table).

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::schema::notes;
use super::{scoped_transaction, TenantError};
use crate::workspaces::WorkspaceAccess;

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, PartialEq, Eq)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
pub struct Note {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub created_by: Uuid,
    pub created_at: OffsetDateTime,
}

pub async fn list_notes(conn: &mut AsyncPgConnection, access: &WorkspaceAccess) -> Result<Vec<Note>, TenantError> {
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            notes::table
                .select(Note::as_select())
                .order((notes::created_at.desc(), notes::id.desc()))
                .limit(100)
                .load(c)
                .await
                .map_err(TenantError::from)
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
) -> Result<Note, TenantError> {
    let (title, body, author) = (title.to_string(), body.to_string(), access.user_id());
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            diesel::insert_into(notes::table)
                .values((notes::title.eq(title), notes::body.eq(body), notes::created_by.eq(author)))
                .returning(Note::as_returning())
                .get_result(c)
                .await
                .map_err(TenantError::from)
        }
        .scope_boxed()
    })
    .await
}

pub async fn delete_note(conn: &mut AsyncPgConnection, access: &WorkspaceAccess, id: Uuid) -> Result<bool, TenantError> {
    scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            let n = diesel::delete(notes::table.find(id)).execute(c).await?;
            Ok(n == 1)
        }
        .scope_boxed()
    })
    .await
}
