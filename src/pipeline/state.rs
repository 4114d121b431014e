//! The stored state a load starts from, read under the locks that keep overlapping runs of
//! one load apart (see [`crate::sink::state::lock`]): an unfinished backfill's position, or
//! the cursor of an incremental load.

use super::LoadError;
use crate::base::options::Mode;
use crate::load::Load;
use crate::sink::WriteSettings;
use crate::sink::state::lock::Lockable;

/// Makes overlapping runs wait for each other, then applies what the state says to ask the
/// APIs for: takes the advisory locks (see [`crate::sink::state::lock`]) on the state keys of
/// `sources` and, for a replace or merge, on the table `write` loads, on the load's own
/// `client`, so they are held until the load ends; then reads each source's stored state
/// into it ([`read_state`]).
pub(crate) async fn lock_and_read_state(
    client: &mut tokio_postgres::Client,
    sources: &mut [&mut Load],
    write: &WriteSettings,
) -> Result<(), LoadError> {
    let mut locks: Vec<Lockable> = sources
        .iter()
        .filter(|load| load.state.kept())
        .map(|load| Lockable::State(load.state.key.clone()))
        .collect();
    if matches!(write.mode, Mode::Replace | Mode::Merge) {
        locks.push(Lockable::table(&write.table));
    }
    if !locks.is_empty() {
        crate::sink::state::lock::acquire(client, locks, write.lock_timeout, &write.table).await?;
    }
    for load in sources {
        read_state(client, load).await?;
    }
    Ok(())
}

/// Applies `load`'s stored state to it, read without a lock (a preview's view; a load reads
/// it under its locks, through [`lock_and_read_state`]): an unfinished `--commit-every`
/// backfill resumes at its next page (with the query it started with); otherwise an
/// incremental load asks only for records past the stored cursor.
pub(crate) async fn read_state(
    client: &tokio_postgres::Client,
    load: &mut Load,
) -> Result<(), LoadError> {
    let state = &load.state;
    let cursor_param = state
        .incremental
        .as_ref()
        .and_then(|inc| inc.cursor_param.clone());
    if state.full_refresh || (cursor_param.is_none() && !state.resumable) {
        return Ok(());
    }
    let stored = crate::sink::state::read(
        client,
        &state.key,
        state.legacy_key.as_deref(),
        &load.write.table,
    )
    .await?;
    let key = &state.key;
    match (&stored.resume, state.resumable) {
        (Some(resume), true) => {
            let position = serde_json::from_str(resume).map_err(|e| {
                LoadError::Unsupported(format!(
                    "the saved position of the unfinished backfill {key:?} in apitap._state is unreadable ({e}); \
                     pass --full-refresh to start it again"
                ))
            })?;
            tracing::info!(key = %key, "resuming an unfinished backfill after its last commit");
            load.source.resume_at = Some(position);
            load.state.resumed_cursor = stored.cursor;
        }
        _ => {
            if let (Some(param), Some(value)) = (cursor_param, stored.cursor) {
                tracing::info!(key = %key, cursor = %value, "resuming after the stored cursor");
                load.source.http.request.query.push((param, value));
            }
        }
    }
    Ok(())
}
