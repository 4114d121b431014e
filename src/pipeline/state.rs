//! The stored state a load starts from, read under the locks that keep overlapping runs of
//! one load apart (see [`crate::sink::state::lock`]): an unfinished backfill's position, or the
//! cursor of an incremental load.

use super::LoadError;
use crate::base::options::Mode;
use crate::request::{LoadRequest, Resume};
use crate::sink::state::lock::Lockable;

/// Makes overlapping runs wait for each other, then reads what the state says to ask the
/// APIs for: takes the advisory locks (see [`crate::sink::state::lock`]) on the state keys of
/// `sources` and, for a replace or merge, on `sink`'s table, on the load's own `client`, so
/// they are held until the load ends; then returns `sources` with their stored state applied.
///
/// An unfinished `--commit-every` backfill resumes at its next page (with the query it
/// started with); otherwise an incremental load asks only for records past the stored
/// cursor.
pub(crate) async fn lock_and_read_state(
    client: &mut tokio_postgres::Client,
    sources: &[LoadRequest],
    sink: &LoadRequest,
) -> Result<Vec<LoadRequest>, LoadError> {
    let mut locks: Vec<Lockable> = sources
        .iter()
        .filter(|r| r.incremental.is_some() || r.commit_every.is_some())
        .map(|r| Lockable::State(r.state_key.clone()))
        .collect();
    if matches!(sink.mode, Mode::Replace | Mode::Merge) {
        locks.push(Lockable::table(&sink.table));
    }
    if !locks.is_empty() {
        crate::sink::state::lock::acquire(client, locks, sink.lock_timeout, &sink.table).await?;
    }
    read_state(client, sources).await
}

/// `sources` with their stored state applied, read without a lock (a preview's view; a
/// load reads it under its locks, through [`lock_and_read_state`]).
pub(crate) async fn read_state(
    client: &tokio_postgres::Client,
    sources: &[LoadRequest],
) -> Result<Vec<LoadRequest>, LoadError> {
    let mut with_state = Vec::with_capacity(sources.len());
    for request in sources {
        with_state.push(with_stored_state(request, client).await?);
    }
    Ok(with_state)
}

/// `request` with its stored state applied (see [`lock_and_read_state`]).
async fn with_stored_state(
    request: &LoadRequest,
    client: &tokio_postgres::Client,
) -> Result<LoadRequest, LoadError> {
    let cursor_param = request
        .incremental
        .as_ref()
        .and_then(|inc| inc.cursor_param.clone());
    let mut with_state = request.clone();
    if request.full_refresh || (cursor_param.is_none() && request.commit_every.is_none()) {
        return Ok(with_state);
    }
    let stored = crate::sink::state::read(
        client,
        &request.state_key,
        request.legacy_state_key.as_deref(),
        &request.table,
    )
    .await?;
    let key = &request.state_key;
    match (&stored.resume, request.commit_every) {
        (Some(resume), Some(_)) => {
            let position = serde_json::from_str(resume).map_err(|e| {
                LoadError::Unsupported(format!(
                    "the saved position of the unfinished backfill {key:?} in apitap._state is unreadable ({e}); \
                     pass --full-refresh to start it again"
                ))
            })?;
            tracing::info!(key = %key, "resuming an unfinished backfill after its last commit");
            with_state.resume = Some(Resume {
                position,
                cursor: stored.cursor,
            });
        }
        _ => {
            if let (Some(param), Some(value)) = (cursor_param, stored.cursor) {
                tracing::info!(key = %key, cursor = %value, "resuming after the stored cursor");
                with_state.http.request.query.push((param, value));
            }
        }
    }
    Ok(with_state)
}
