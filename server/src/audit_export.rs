//! `GET /w/{slug}/audit/export.csv` and `…/export.jsonl`: the audit log of the current
//! filter as a file, streamed from the database in batches (constant memory whatever the
//! size), ending in a signed summary line (`fluxi_core::audit::export`).

use std::collections::HashMap;

use app::ssr::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fluxi_core::audit::export::{ExportWriter, ExportedFilter};
use fluxi_core::audit::query::{self, AuditReader, Filter, RawFilter};
use fluxi_core::audit::{Action, Detail, Event, ExportFormat, Outcome, Target};
use fluxi_core::workspaces::{self, Permission};
use tower_sessions::Session;

/// Events read per query.
const BATCH: i64 = 2_000;

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "Workspace not found: it does not exist, or you are not a member of it.")
}

pub async fn export(
    State(state): State<AppState>,
    session: Session,
    Path((slug, file)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let format = match file.as_str() {
        "export.csv" => ExportFormat::Csv,
        "export.jsonl" => ExportFormat::JsonLines,
        _ => return not_found(),
    };
    match start(&state, &session, &slug, format, &params, req).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn start(
    state: &AppState,
    session: &Session,
    slug: &str,
    format: ExportFormat,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<Response, Response> {
    let busy = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "audit export could not start");
        plain(StatusCode::SERVICE_UNAVAILABLE, "The export could not start. Try again in a moment.")
    };
    let user = match app::ssr::current_user(state, session).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let next = format!("/w/{slug}/audit");
            let to = format!(
                "/login?next={}",
                serde_urlencoded::to_string([("", next)]).unwrap_or_default().trim_start_matches('=')
            );
            return Err((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response());
        }
        Err(e) => return Err(busy(&format!("{e:?}"))),
    };
    let (parts, _) = req.into_parts();
    let origin = app::ssr::origin_of(state, &parts);
    let audit = app::ssr::audit_as(state, &origin, &user);
    let mut conn = state.pool.get().await.map_err(|e| busy(&e))?;
    let signed_in_with = app::ssr::signed_in_with(session).await.map_err(|e| busy(&format!("{e:?}")))?;
    let access = match workspaces::authorize(&mut conn, &audit, user.id, signed_in_with, slug).await {
        Ok(access) => access,
        Err(workspaces::WorkspaceError::NotFound) => return Err(not_found()),
        Err(workspaces::WorkspaceError::MfaRequired) => {
            return Err(plain(StatusCode::FORBIDDEN, "This workspace requires two-factor authentication."))
        }
        Err(workspaces::WorkspaceError::Upgrading) => {
            return Err(plain(StatusCode::SERVICE_UNAVAILABLE, "This workspace is being upgraded. Try again shortly."))
        }
        Err(e) => return Err(busy(&e)),
    };
    // Everyone but owners and admins gets what non-members get.
    let permitted =
        workspaces::require(&mut conn, &audit, &access, Permission::ViewAudit, Action::AuditExported, Target::AuditLog)
            .await;
    if permitted.is_err() {
        return Err(not_found());
    }
    let reader = AuditReader::for_workspace(&access).map_err(|_| not_found())?;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let raw = RawFilter {
        action: get("action"),
        actor: get("actor"),
        from: get("from"),
        to: get("to"),
        outcome: get("outcome"),
    };
    let filter = match query::parse_filter(&mut conn, &state.pseudonyms, &raw).await {
        Ok(Ok(filter)) => filter,
        Ok(Err(problem)) => {
            let message = format!("{problem}\n");
            return Err((StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message)
                .into_response());
        }
        Err(e) => return Err(busy(&e)),
    };
    // Stable while events arrive: the export ends at the chain's position now (`head`
    // seals first, so the date bounds after it see every event committed so far).
    let head = query::head(&mut conn, &reader).await.map_err(|e| busy(&e))?;
    let mut bounds = query::seq_bounds(&mut conn, &reader, &filter).await.map_err(|e| busy(&e))?;
    bounds.1 = bounds.1.min(head);
    let detail = Detail::AuditExport { filter: filter.used(), format };
    let event =
        Event::workspace(access.workspace_id(), Action::AuditExported, Target::AuditLog, Outcome::Succeeded, detail);
    audit.record(&mut conn, event).await.map_err(|e| busy(&e))?;
    drop(conn);

    let (extension, content_type) = match format {
        ExportFormat::Csv => ("csv", "text/csv; charset=utf-8"),
        ExportFormat::JsonLines => ("jsonl", "application/jsonl; charset=utf-8"),
    };
    let day = state.clock.now().date();
    let disposition = format!("attachment; filename=\"audit-{}-{day}.{extension}\"", access.slug());
    // Fused: the compression layer may poll again after the end.
    let day_text = |t: Option<time::OffsetDateTime>| t.map(|t| t.date().to_string());
    let exported = ExportedFilter {
        action: filter.action.map(|a| a.as_param()),
        actor_filtered: filter.actor.is_some(),
        from: day_text(filter.from),
        until: day_text(filter.until),
        outcome: filter.outcome.map(|o| o.name().to_string()),
        seq_from: bounds.0,
        seq_through: bounds.1,
        exported_at: state.clock.now().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    };
    let stream = futures_util::StreamExt::fuse(rows(state.clone(), reader, filter, bounds, format, exported));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

struct Progress {
    state: AppState,
    reader: AuditReader,
    filter: Filter,
    bounds: (i64, i64),
    after: i64,
    writer: Option<ExportWriter>,
    started: bool,
}

/// The file, one batch of rows per chunk; a connection is taken per batch, so a slow
/// reader holds none between them.
fn rows(
    state: AppState,
    reader: AuditReader,
    filter: Filter,
    bounds: (i64, i64),
    format: ExportFormat,
    exported: ExportedFilter,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let writer = ExportWriter::new(format, reader.chain(), exported);
    let progress = Progress { state, reader, filter, bounds, after: 0, writer: Some(writer), started: false };
    futures_util::stream::unfold(progress, |mut p| async move {
        let mut writer = p.writer.take()?;
        let mut chunk = Vec::new();
        if !p.started {
            p.started = true;
            chunk.extend(writer.start());
        }
        let batch = match p.state.pool.get().await {
            Ok(mut conn) => {
                query::batch(&mut conn, &p.reader, &p.filter, p.bounds, p.after, BATCH).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                // The file ends without a summary: verification says it is incomplete.
                tracing::error!(error = %e, "audit export stopped");
                return Some((Err(std::io::Error::other("export stopped")), p));
            }
        };
        if batch.is_empty() {
            chunk.extend(writer.finish(&p.state.audit_signer));
            return Some((Ok(Bytes::from(chunk)), p));
        }
        let ids: Vec<uuid::Uuid> = batch.iter().filter_map(|e| e.actor_id).collect();
        let names = match p.state.pool.get().await {
            Ok(mut conn) => query::names_for(&mut conn, ids).await.unwrap_or_default(),
            Err(_) => Default::default(),
        };
        for e in &batch {
            let name = e.actor_id.and_then(|id| names.get(&id)).map(String::as_str);
            chunk.extend(writer.row(e, name));
        }
        p.after = batch.last().map_or(p.after, |e| e.seq);
        p.writer = Some(writer);
        Some((Ok(Bytes::from(chunk)), p))
    })
}
