//! `--mode replace` by swap: the rows go into a new table made like the target, and at the
//! end of the load's transaction the new table takes the target's place and name.
//!
//! Against deleting the old rows and COPYing the new ones in place, a swap writes no dead
//! rows (the table does not double in size until VACUUM), builds each index once from
//! sorted data instead of row by row, and can COPY with FREEZE. Readers see the old rows
//! until COMMIT, as with a DELETE; they wait only for the short catalog work at the end.
//!
//! What makes the table what it is moves with it: columns, defaults, NOT NULL and CHECK
//! constraints, identity columns (their counters continue), serial sequences, comments,
//! storage options, indexes, primary key, unique and exclusion constraints, foreign keys,
//! triggers, owner, table and column grants, replica identity, row-security flags,
//! per-column statistics settings and the CLUSTER index. What cannot move — views, foreign
//! keys of other tables, publications, row-security policies, rules, partitioning and
//! inheritance — makes the load refuse to start, naming what is in the way, so that nothing
//! depending on the table is dropped or silently detached. `--replace-with delete` replaces
//! the rows in place instead.
//!
//! Two differences from a DELETE remain, as with any swap: the table gets a new OID, and
//! the loaded rows do not fire its triggers (they are re-created after the rows).

use std::time::{Duration, Instant};

use tokio_postgres::Transaction;

use crate::schema::{TableName, quote_ident};
use queries::{ADOPT, CREATE_LIKE, FOREIGN_KEYS, IDENTITIES, IN_THE_WAY, INDEXES, RESTORE};

mod queries;
use crate::sink::plan::citus::Distribution;
use crate::sink::{SinkError, qualified};

/// The name the new table is built under until the swap: in the target's schema, unique to
/// the target, and short enough for any target name.
pub(crate) fn building_name(target: &TableName, oid: u32) -> TableName {
    TableName {
        schema: target.schema.clone(),
        table: format!("apitap_replace_{oid}"),
    }
}

/// An index or index-backed constraint (primary key, unique, exclusion) to build on the new
/// table under a temporary name, and to rename once the old one is gone.
struct Index {
    /// The old index's (or constraint's) name, which the new one takes.
    name: String,
    /// Builds it on the new table under `temporary`.
    build: String,
    temporary: String,
}

/// A replace by swap under way, inside the load's transaction.
pub(crate) struct Swap {
    table: TableName,
    new: TableName,
    oid: u32,
    indexes: Vec<Index>,
    /// `ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY` for keys to other tables, built before
    /// the swap (they do not name the table itself).
    foreign_keys: Vec<String>,
    /// The new table's identity sequences, each with the name of the old one it replaces.
    identities: Vec<(String, String)>,
    built: bool,
    /// Created and committed by a `--copy-streams` connection (see [`Swap::begin`]).
    committed: bool,
}

impl Swap {
    /// Starts a swap of `table` (whose OID is `oid`), in the load's transaction and before
    /// any row is written: locks the table against writes and schema changes (reads go on),
    /// refuses what a swap would break, and creates the new table like it. With
    /// `keys_first`, indexes and constraints are built before the rows too, so that rows
    /// they refuse can be found one by one (`--on-error reject`); otherwise they are built
    /// once, after the rows, which is faster.
    ///
    /// # Errors
    /// Something depends on the table that a swap would break, or a failing statement.
    ///
    /// With `committed_by` (a `--copy-streams` connection), the new table is created by that
    /// connection and committed, so that the streams can COPY into it; it is commented with
    /// that connection's pid, which the swap clears, and which lets the next `--copy-streams`
    /// load drop it if this one is killed before the swap.
    pub(crate) async fn begin(
        transaction: &Transaction<'_>,
        table: &TableName,
        oid: u32,
        keys_first: bool,
        citus: Option<&Distribution>,
        committed_by: Option<&tokio_postgres::Client>,
    ) -> Result<Swap, SinkError> {
        let new = building_name(table, oid);
        let run = |action: &'static str| {
            move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
        };
        lock_for_writers(transaction, table, oid).await?;
        create_new(transaction, table, &new, oid, committed_by).await?;
        // A Citus table's replacement is distributed as it is, before any row or index.
        let distribute = citus
            .map(|d| crate::sink::plan::citus::recreate(d, table, &new))
            .transpose()?;
        if let Some(call) = &distribute {
            // A reference table has a placement on the coordinator too; Citus would run the
            // COPY there locally and then refuse the parallel ANALYZE and DDL of the swap.
            transaction
                .batch_execute(&format!(
                    "SET LOCAL citus.enable_local_execution TO off; {call}"
                ))
                .await
                .map_err(run("distributing the new table like the old one (Citus)"))?;
        }
        // The identity counters continue where the old table's stood, as after a DELETE.
        let mut identities = Vec::new();
        for row in transaction
            .query(IDENTITIES, &[&oid, &qualified(&new)])
            .await
            .map_err(run("reading the catalog"))?
        {
            let setval: String = row.get(0);
            transaction
                .batch_execute(&setval)
                .await
                .map_err(run("setval (identity)"))?;
            identities.push((row.get(1), row.get(2)));
        }
        let indexes = indexes(transaction, table, &new, oid).await?;
        let foreign_keys = transaction
            .query(FOREIGN_KEYS, &[&oid, &qualified(&new)])
            .await
            .map_err(run("reading the catalog"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut swap = Swap {
            table: table.clone(),
            new,
            oid,
            indexes,
            foreign_keys,
            identities,
            built: false,
            committed: committed_by.is_some(),
        };
        // On Citus the indexes are built on the empty shards, before the rows: DDL after a
        // COPY spread over the workers would have to run sequentially on each placement.
        if keys_first || distribute.is_some() {
            swap.build(transaction).await?;
        }
        Ok(swap)
    }

    async fn build(&mut self, transaction: &Transaction<'_>) -> Result<(), SinkError> {
        for statement in self
            .indexes
            .iter()
            .map(|i| &i.build)
            .chain(&self.foreign_keys)
        {
            transaction.batch_execute(statement).await.map_err(|e| {
                SinkError::database(
                    "building the indexes and keys of the new rows",
                    &self.table,
                    &e,
                )
            })?;
        }
        self.built = true;
        Ok(())
    }

    /// After the last row: builds what is still to build, then swaps the new table in. The
    /// old table is locked out for readers from here to COMMIT, which is catalog work only;
    /// the lock is tried for up to `lock_timeout` (see [`lock_out_readers`]).
    ///
    /// # Errors
    /// The new rows break a key or constraint, something came to depend on the old table
    /// during the load, or a failing statement.
    pub(crate) async fn finish(
        mut self,
        transaction: &Transaction<'_>,
        lock_timeout: Duration,
    ) -> Result<(), SinkError> {
        if !self.built {
            self.build(transaction).await?;
        }
        let table = &self.table;
        let run = |action: &'static str| {
            move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
        };
        transaction
            .batch_execute(&format!("ANALYZE {}", qualified(&self.new)))
            .await
            .map_err(run("ANALYZE"))?;
        if self.committed {
            // The pid that marked it as the streams' own; the old table's comment, if any,
            // is restored below.
            transaction
                .batch_execute(&format!(
                    "COMMENT ON TABLE {} IS NULL",
                    qualified(&self.new)
                ))
                .await
                .map_err(run("COMMENT ON TABLE"))?;
        }
        lock_out_readers(transaction, table, self.oid, lock_timeout).await?;
        // Read under the lock, so nothing changes between reading and re-applying.
        let restore: Vec<String> = transaction
            .query(RESTORE, &[&self.oid, &qualified(table)])
            .await
            .map_err(run("reading the catalog"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let adopt: Vec<String> = transaction
            .query(ADOPT, &[&self.oid, &qualified(&self.new)])
            .await
            .map_err(run("reading the catalog"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for statement in &adopt {
            transaction
                .batch_execute(statement)
                .await
                .map_err(run("handing the owner and sequences to the new table"))?;
        }
        // No CASCADE: anything that came to depend on the table during the load stops the
        // swap here, with the server naming it, rather than being dropped.
        transaction
            .batch_execute(&format!("DROP TABLE {}", qualified(table)))
            .await
            .map_err(run("DROP TABLE (the replaced table)"))?;
        let schema = table.schema.as_deref().map(quote_ident);
        let in_schema = |name: &str| match &schema {
            Some(s) => format!("{s}.{}", quote_ident(name)),
            None => quote_ident(name),
        };
        let mut renames = vec![format!(
            "ALTER TABLE {} RENAME TO {}",
            qualified(&self.new),
            quote_ident(&table.table)
        )];
        // Renaming the index of a key renames the key too; Citus takes this form on a
        // distributed table, where it refuses ALTER TABLE … RENAME CONSTRAINT.
        for index in &self.indexes {
            renames.push(format!(
                "ALTER INDEX {} RENAME TO {}",
                in_schema(&index.temporary),
                quote_ident(&index.name)
            ));
        }
        for (sequence, old_name) in &self.identities {
            renames.push(format!(
                "ALTER SEQUENCE {sequence} RENAME TO {}",
                quote_ident(old_name)
            ));
        }
        for statement in renames.iter().chain(&restore) {
            transaction
                .batch_execute(statement)
                .await
                .map_err(run("swapping in the new table"))?;
        }
        Ok(())
    }
}

/// Locks `table` against writes and schema changes for the rest of the transaction (reads
/// go on), and refuses a swap that would break what depends on it.
async fn lock_for_writers(
    transaction: &Transaction<'_>,
    table: &TableName,
    oid: u32,
) -> Result<(), SinkError> {
    let run = |action: &'static str| {
        move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
    };
    // EXCLUSIVE lets readers in but makes writers wait; they then write into the new
    // table, as their statements look the name up again once the lock is released.
    transaction
        .batch_execute(&format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            qualified(table)
        ))
        .await
        .map_err(run("LOCK TABLE"))?;
    let in_the_way: Vec<String> = transaction
        .query(IN_THE_WAY, &[&oid])
        .await
        .map_err(run("reading the catalog"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if in_the_way.is_empty() {
        return Ok(());
    }
    Err(SinkError::Plan {
        table: table.to_string(),
        reason: format!(
            "--mode replace swaps in a new table, which would break what depends on this one: {}; \
             pass --replace-with delete (YAML: replace_with: delete) to replace the rows in place instead",
            in_the_way.join("; ")
        ),
    })
}

/// Creates the new table like `table`, in the load's transaction, or with `committed_by`
/// in that connection's own committed transaction (see [`Swap::begin`]).
async fn create_new(
    transaction: &Transaction<'_>,
    table: &TableName,
    new: &TableName,
    oid: u32,
    committed_by: Option<&tokio_postgres::Client>,
) -> Result<(), SinkError> {
    let run = |action: &'static str| {
        move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
    };
    // A new table the streams of a killed replace left committed would be in the way. The
    // streams' connection drops it for good at once: dropped in the load's transaction,
    // its name would stay taken until COMMIT.
    match committed_by {
        Some(client) => crate::sink::write::streams::sweep_stale_stages(client).await,
        None => crate::sink::write::streams::sweep_stale_stages(transaction).await,
    }
    .map_err(run("DROP TABLE (left by a killed load)"))?;
    let create: String = transaction
        .query_one(CREATE_LIKE, &[&oid, &qualified(new), &qualified(table)])
        .await
        .map_err(run("reading the catalog"))?
        .get(0);
    let Some(client) = committed_by else {
        return transaction
            .batch_execute(&create)
            .await
            .map_err(run("CREATE TABLE (for the replace)"));
    };
    let creating = run("CREATE TABLE (for the replace, filled by the streams)");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(creating)?
        .get(0);
    client
        .batch_execute(&format!(
            "BEGIN; {create}; COMMENT ON TABLE {} IS '{pid}'; COMMIT",
            qualified(new)
        ))
        .await
        .map_err(run("CREATE TABLE (for the replace, filled by the streams)"))
}

/// The old table's indexes and index-backed constraints, each to build on the new table
/// under a temporary name.
async fn indexes(
    transaction: &Transaction<'_>,
    table: &TableName,
    new: &TableName,
    oid: u32,
) -> Result<Vec<Index>, SinkError> {
    let rows = transaction
        .query(INDEXES, &[&oid])
        .await
        .map_err(|e| SinkError::database("reading the catalog", table, &e))?;
    let mut indexes = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let name: String = row.get(0);
        let temporary = format!("apitap_{oid}_{i}");
        let constraint: bool = row.get(3);
        let build = if constraint {
            let definition: String = row.get(1);
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
                qualified(new),
                quote_ident(&temporary)
            )
        } else {
            // pg_get_indexdef names the index and the table; only what follows USING is
            // kept, after checking that the start is what it must be.
            let (definition, prefix): (String, String) = (row.get(1), row.get(2));
            let Some(rest) = definition.strip_prefix(&prefix) else {
                return Err(SinkError::Plan {
                    table: table.to_string(),
                    reason: format!(
                        "cannot rebuild index {name:?} on the replacing table: its definition does not start as expected ({definition}); \
                         pass --replace-with delete"
                    ),
                });
            };
            let unique: bool = row.get(4);
            format!(
                "CREATE {}INDEX {} ON {} USING {rest}",
                if unique { "UNIQUE " } else { "" },
                quote_ident(&temporary),
                qualified(new)
            )
        };
        indexes.push(Index {
            name,
            build,
            temporary,
        });
    }
    Ok(indexes)
}

/// How long one try at the swap's lock waits. A LOCK waiting in the queue makes every new
/// reader of the table queue behind it, so this is the longest a reader ever waits for the
/// swap besides the catalog work itself.
const LOCK_TRY: Duration = Duration::from_secs(1);

/// Takes the ACCESS EXCLUSIVE lock the swap needs, without letting a long-running reader
/// stall everyone else: each try waits at most [`LOCK_TRY`], then steps out of the queue
/// (readers go on) and tries again after a pause, until `budget` is spent.
///
/// # Errors
/// [`SinkError::SwapLocked`] naming the sessions still using the table after `budget`; a
/// failing statement.
async fn lock_out_readers(
    transaction: &Transaction<'_>,
    table: &TableName,
    oid: u32,
    budget: Duration,
) -> Result<(), SinkError> {
    let run = |action: &'static str| {
        move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let this_try = LOCK_TRY
            .min(budget.saturating_sub(started.elapsed()))
            .max(Duration::from_millis(1));
        // SET LOCAL inside the savepoint: rolled back with it, or reset once the lock is had.
        let tried = transaction
            .batch_execute(&format!(
                "SAVEPOINT apitap_swap_lock; SET LOCAL lock_timeout = {}; \
                 LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                this_try.as_millis(),
                qualified(table)
            ))
            .await;
        match tried {
            Ok(()) => {
                return transaction
                    .batch_execute("RELEASE SAVEPOINT apitap_swap_lock; RESET lock_timeout")
                    .await
                    .map_err(run("LOCK TABLE"));
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                transaction
                    .batch_execute("ROLLBACK TO SAVEPOINT apitap_swap_lock")
                    .await
                    .map_err(run("LOCK TABLE"))?;
            }
            Err(e) => return Err(run("LOCK TABLE")(e)),
        }
        if started.elapsed() >= budget {
            let sessions: Vec<String> = transaction
                .query(
                    &format!(
                        "SELECT DISTINCT ON (a.xact_start, a.pid) {} \
                         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                         WHERE l.locktype = 'relation' AND l.relation = $1::int8::oid AND l.granted \
                           AND l.pid <> pg_backend_pid() ORDER BY a.xact_start, a.pid LIMIT 3",
                        crate::sink::state::lock::session_columns("a.xact_start")
                    ),
                    &[&i64::from(oid)],
                )
                .await
                .map_err(run("reading pg_locks"))?
                .iter()
                .map(|row| crate::sink::state::lock::session_text(row, "in a transaction since"))
                .collect();
            return Err(SinkError::SwapLocked {
                table: table.to_string(),
                sessions: if sessions.is_empty() {
                    "sessions that have since let go of it".into()
                } else {
                    sessions.join("; ")
                },
                waited: budget,
            });
        }
        tracing::info!(table = %table, "the table is in use; trying the swap again shortly");
        tokio::time::sleep(pause.min(budget.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
