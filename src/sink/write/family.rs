//! `--nested tables`: the child tables' part of a load's transaction — their DDL before
//! the rows, and their spooled rows ([`super::spool`]) after the root table's, before the
//! commit — so the family commits together or not at all.

use tokio::sync::mpsc;

use super::create::create_table;
use super::encoded::{Encoded, SegmentEnd};
use super::execute;
use super::merge::as_stored;
use super::spool::Spool;
use crate::base::options::Mode;
use crate::metrics::Statement;
use crate::progress::{Progress, SentWith};
use crate::schema::{Column, quote_ident};
use crate::sink::plan::family::{FamilyPlan, IDX, RECORD};
use crate::sink::plan::{AlterTable, LoadPlan};
use crate::sink::{SinkError, qualified};

/// Creates or alters each child table as its plan says; a replace empties it (inside the
/// transaction, so readers see the old rows until the new ones commit, as for the root).
pub(super) async fn prepare_children(
    transaction: &mut tokio_postgres::Transaction<'_>,
    family: &FamilyPlan,
    mode: Mode,
) -> Result<(), SinkError> {
    for plan in &family.children {
        let table = &plan.table;
        if let Some(create) = &plan.create_table {
            create_table(transaction, plan, create).await?;
        }
        let alter = plan.alter_table.as_ref().map(AlterTable::sql);
        execute(transaction, alter.as_deref(), "ALTER TABLE", table).await?;
        let delete = plan
            .delete_statement()
            .filter(|_| mode == Mode::Replace && plan.create_table.is_none());
        execute(transaction, delete.as_deref(), "DELETE", table).await?;
    }
    Ok(())
}

/// [`super::RowsPath::Family`]: each part of the family's rows as it comes — the root's
/// file, then each child table's — up to the input's end or a commit point, whose marker
/// brings the last part. `child_rows` adds up the rows each child table got.
pub(super) async fn segment(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    family: &FamilyPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    first: bool,
    child_rows: &mut [u64],
) -> Result<(u64, SegmentEnd), SinkError> {
    let freeze = first && plan.may_freeze();
    let mut rows = 0;
    loop {
        let (part, end) = match rx.recv().await {
            Some(Encoded::Part(part)) => (Some(part), None),
            Some(item) => match Option::<SegmentEnd>::from(item) {
                Some(SegmentEnd::Done { cursor, children }) => {
                    let end = SegmentEnd::Done {
                        cursor,
                        children: None,
                    };
                    (children, Some(end))
                }
                Some(SegmentEnd::Checkpoint {
                    resume,
                    cursor,
                    children,
                }) => {
                    let end = SegmentEnd::Checkpoint {
                        resume,
                        cursor,
                        children: None,
                    };
                    (children, Some(end))
                }
                None => return Err(SinkError::Protocol("rows not spooled on the family path")),
            },
            None => return Err(SinkError::InputEnded),
        };
        if let Some(part) = part {
            let mut files = part.into_files();
            if let Some(Some(root)) = files.pop() {
                let copied = root
                    .copy(transaction, &plan.copy_statement(freeze), &plan.table)
                    .await?;
                progress.add_rows(copied, SentWith::Copy);
                progress.round_trip(Statement::Copy);
                rows += copied;
            }
            for ((file, child), total) in files
                .into_iter()
                .zip(&family.children)
                .zip(&mut *child_rows)
            {
                if let Some(file) = file {
                    *total += file
                        .copy(transaction, &child.copy_statement(false), &child.table)
                        .await?;
                }
            }
        }
        if let Some(end) = end {
            return Ok((rows, end));
        }
    }
}

/// Sends the child rows of a segment, table by table (merging them in a merge); returns
/// the rows each got.
pub(super) async fn write_children(
    transaction: &tokio_postgres::Transaction<'_>,
    root: &LoadPlan,
    family: &FamilyPlan,
    spool: Option<Spool>,
    mode: Mode,
) -> Result<Vec<u64>, SinkError> {
    match (spool, mode) {
        (spool, Mode::Merge) => merge_children(transaction, root, family, spool).await,
        (Some(spool), _) => spool.copy_into(transaction, &family.children).await,
        (None, _) => Ok(vec![0; family.children.len()]),
    }
}

/// A merge's child rows: the children of every merged parent become those of the parent's
/// last record in the segment — rows that stay the same are left untouched, the others
/// deleted, new ones inserted — so no child is orphaned or stale. The spool holds each
/// child table's rows, then the root rows' keys, each with its record's number.
pub(super) async fn merge_children(
    transaction: &tokio_postgres::Transaction<'_>,
    root: &LoadPlan,
    family: &FamilyPlan,
    spool: Option<Spool>,
) -> Result<Vec<u64>, SinkError> {
    let mut files = spool.map(Spool::into_files).unwrap_or_default();
    let Some(Some(parents)) = files.pop() else {
        // No root row: no parent is merged.
        return Ok(vec![0; family.children.len()]);
    };
    let keys = root_keys(root, family);
    let quoted: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    execute(
        transaction,
        Some(&format!(
            "CREATE TEMP TABLE {PARENTS} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA; \
             ALTER TABLE {PARENTS} ADD COLUMN {RECORD} bigint",
            cols = quoted.join(", "),
            target = qualified(&root.table),
        )),
        "CREATE TEMP TABLE",
        &root.table,
    )
    .await?;
    let copy = format!(
        "COPY {PARENTS} ({}, {RECORD}) FROM STDIN (FORMAT binary)",
        quoted.join(", ")
    );
    parents.copy(transaction, &copy, &root.table).await?;
    let mut loaded = Vec::with_capacity(family.children.len());
    for (i, (plan, file)) in family.children.iter().zip(files).enumerate() {
        let staging = format!("apitap_child_{i}");
        let cols = plan.quoted_copy_names().join(", ");
        execute(
            transaction,
            Some(&format!(
                "CREATE TEMP TABLE {staging} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA; \
                 ALTER TABLE {staging} ADD COLUMN {RECORD} bigint",
                target = qualified(&plan.table),
            )),
            "CREATE TEMP TABLE",
            &plan.table,
        )
        .await?;
        if let Some(file) = file {
            let copy = format!("COPY {staging} ({cols}, {RECORD}) FROM STDIN (FORMAT binary)");
            file.copy(transaction, &copy, &plan.table).await?;
        }
        let statements = ChildMerge::new(plan, &keys, &staging);
        execute(
            transaction,
            Some(&statements.delete()),
            "DELETE",
            &plan.table,
        )
        .await?;
        let inserted = transaction
            .execute(&statements.insert(), &[])
            .await
            .map_err(|e| SinkError::database("INSERT", &plan.table, &e))?;
        loaded.push(inserted);
    }
    Ok(loaded)
}

/// The temporary table of a merge's root keys and record numbers.
const PARENTS: &str = "apitap_parents";

/// The root's key columns, as the root table names them.
fn root_keys(root: &LoadPlan, family: &FamilyPlan) -> Vec<String> {
    family
        .spec
        .root_identity
        .iter()
        .map(|&i| root.decode.columns[i].name.clone())
        .collect()
}

/// The statements that merge one child table's staged rows.
struct ChildMerge<'a> {
    plan: &'a LoadPlan,
    /// The root's key columns, and the child's columns holding them (its first links).
    keys: Vec<(String, String)>,
    /// The child's links and `_idx`: its rows' identity.
    identity: Vec<String>,
    staging: &'a str,
}

impl<'a> ChildMerge<'a> {
    fn new(plan: &'a LoadPlan, keys: &[String], staging: &'a str) -> ChildMerge<'a> {
        let links: Vec<&Column> = plan.decode.columns[..plan.copy_columns]
            .iter()
            .filter(|c| c.name.starts_with("_parent") || c.name == IDX)
            .collect();
        ChildMerge {
            plan,
            keys: keys
                .iter()
                .zip(&links)
                .map(|(key, link)| (quote_ident(key), quote_ident(&link.name)))
                .collect(),
            identity: links.iter().map(|c| quote_ident(&c.name)).collect(),
            staging,
        }
    }

    /// `latest`: each merged key's last record; `new`: the staged rows of those records.
    fn with(&self) -> String {
        let keys: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        let joined: Vec<String> = self
            .keys
            .iter()
            .map(|(key, link)| format!("s.{link} = l.{key}"))
            .collect();
        let cols: Vec<String> = self
            .plan
            .quoted_copy_names()
            .iter()
            .map(|c| format!("s.{c}"))
            .collect();
        format!(
            "WITH latest AS (SELECT {keys}, max({RECORD}) AS {RECORD} FROM {PARENTS} GROUP BY {keys}), \
             new AS (SELECT {cols} FROM {staging} s JOIN latest l ON {joined} AND s.{RECORD} = l.{RECORD})",
            keys = keys.join(", "),
            cols = cols.join(", "),
            staging = self.staging,
            joined = joined.join(" AND "),
        )
    }

    /// Deletes the children of merged parents that no new row repeats exactly.
    fn delete(&self) -> String {
        let parent: Vec<String> = self
            .keys
            .iter()
            .map(|(key, link)| format!("c.{link} = l.{key}"))
            .collect();
        let same: Vec<String> = self.plan.decode.columns[..self.plan.copy_columns]
            .iter()
            .map(|c| {
                let name = quote_ident(&c.name);
                format!(
                    "{} IS NOT DISTINCT FROM {}",
                    as_stored(&format!("n.{name}"), c.pg_type),
                    as_stored(&format!("c.{name}"), c.pg_type)
                )
            })
            .collect();
        format!(
            "{with} DELETE FROM {target} c USING latest l WHERE {parent} \
             AND NOT EXISTS (SELECT 1 FROM new n WHERE {same})",
            with = self.with(),
            target = qualified(&self.plan.table),
            parent = parent.join(" AND "),
            same = same.join(" AND "),
        )
    }

    /// Inserts the new rows no row of the table already is (those left by [`Self::delete`]).
    fn insert(&self) -> String {
        let cols = self.plan.quoted_copy_names().join(", ");
        let same: Vec<String> = self
            .identity
            .iter()
            .map(|c| format!("c.{c} = n.{c}"))
            .collect();
        format!(
            "{with} INSERT INTO {target} ({cols}) SELECT {cols} FROM new n \
             WHERE NOT EXISTS (SELECT 1 FROM {target} c WHERE {same})",
            with = self.with(),
            target = qualified(&self.plan.table),
            same = same.join(" AND "),
        )
    }
}
