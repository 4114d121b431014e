//! Overlapping runs serialize: a slow cron job and the next one must not both read one
//! stored cursor and load the same rows, or both replace one table.
//!
//! A load that keeps state takes an advisory lock on its state key, and a replace or merge one
//! on its table, before it reads the state. The locks are session locks on the load's own
//! connection, not transaction locks: a `--commit-every` backfill commits many times, and a
//! second run must not slip in between two of its commits. They go when the load's
//! connection closes — at the end of the load, or when the process dies, so a killed run
//! never leaves a lock behind.
//!
//! A run that finds a lock taken waits up to `--lock-timeout`, then fails naming the holder
//! (its server pid, application, user, address and since when it is connected).

use std::time::Duration;

use crate::schema::TableName;
use crate::sink::SinkError;

/// Both halves of apitap's advisory lock keys start with this (`'apit'`), so they do not
/// collide with an application's own advisory locks on small integers.
const NAMESPACE: i32 = 0x6170_6974;

/// Something only one load at a time may work on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lockable {
    /// A key in `apitap._state`.
    State(String),
    /// A table a replace or merge writes.
    Table(String),
}

impl Lockable {
    /// The target table of a replace or merge.
    pub(crate) fn table(table: &TableName) -> Lockable {
        Lockable::Table(crate::sink::qualified(table))
    }

    /// The lock's name, hashed by the server into the second half of the key.
    fn key_text(&self) -> String {
        match self {
            Lockable::State(key) => format!("state:{key}"),
            Lockable::Table(table) => format!("table:{table}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Lockable::State(key) => format!("state key {key:?}"),
            Lockable::Table(table) => format!("table {table}"),
        }
    }
}

/// Takes the advisory locks on `what`, waiting up to `timeout` for each; they are held until
/// `client`'s connection closes. Locks are taken in one order (states, then tables, each
/// sorted), so two runs wanting some of the same locks cannot deadlock.
///
/// # Errors
/// [`SinkError::Locked`] naming the holder when a lock is still taken after `timeout`; a
/// failing statement.
pub(crate) async fn acquire(
    client: &mut tokio_postgres::Client,
    mut what: Vec<Lockable>,
    timeout: Duration,
    table: &TableName,
) -> Result<(), SinkError> {
    what.sort();
    what.dedup();
    for lockable in &what {
        let key = lockable.key_text();
        let fail = |e: tokio_postgres::Error| SinkError::database("taking a lock", table, &e);
        // SET LOCAL: the wait bound applies to this statement only, not to the load.
        let transaction = client.transaction().await.map_err(fail)?;
        transaction
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = {}",
                timeout.as_millis().clamp(1, i32::MAX as u128)
            ))
            .await
            .map_err(fail)?;
        let taken = transaction
            .execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                &[&NAMESPACE, &key],
            )
            .await;
        match taken {
            Ok(_) => transaction.commit().await.map_err(fail)?,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                drop(transaction);
                let holder = holder(client, &key).await.map_err(fail)?;
                return Err(SinkError::Locked {
                    what: lockable.describe(),
                    holder,
                    waited: timeout,
                });
            }
            Err(e) => return Err(fail(e)),
        }
        tracing::debug!(lock = %lockable.describe(), "lock taken");
    }
    Ok(())
}

/// Who holds the lock of `key`, as far as the server lets this user see.
async fn holder(
    client: &tokio_postgres::Client,
    key: &str,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                   AND l.classid = $1::int8::oid AND l.objid = (hashtext($2)::int8 & 4294967295)::oid \
                 LIMIT 1",
                session_columns("a.backend_start")
            ),
            &[&i64::from(NAMESPACE), &key],
        )
        .await?;
    Ok(match row {
        Some(row) => session_text(&row, "connected since"),
        None => "a session that has since let go of it".into(),
    })
}

/// What [`session_text`] reads from `pg_stat_activity a`, with `since` as its time.
pub(crate) fn session_columns(since: &str) -> String {
    format!(
        "a.pid, a.application_name, a.usename::text, host(a.client_addr), \
         to_char({since}, 'YYYY-MM-DD HH24:MI:SS TZ')"
    )
}

/// A server session, for messages: `server process 4242 (application "cron-load", user etl,
/// from 10.0.0.7, connected since …)`, with what the server let this user see. Never the
/// session's query text, which may hold anything.
pub(crate) fn session_text(row: &tokio_postgres::Row, since: &str) -> String {
    let pid: i32 = row.get(0);
    let application: Option<String> = row.get(1);
    let user: Option<String> = row.get(2);
    let address: Option<String> = row.get(3);
    let at: Option<String> = row.get(4);
    let details: Vec<String> = [
        application
            .filter(|a| !a.is_empty())
            .map(|a| format!("application {a:?}")),
        user.map(|u| format!("user {u}")),
        address.map(|a| format!("from {a}")),
        at.map(|t| format!("{since} {t}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if details.is_empty() {
        format!("server process {pid}")
    } else {
        format!("server process {pid} ({})", details.join(", "))
    }
}
