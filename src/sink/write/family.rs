//! `--nested tables`: the child tables' part of a load's transaction — their DDL before
//! the rows, and their spooled rows ([`super::spool`]) after the root table's, before the
//! commit — so the family commits together or not at all.

use super::create::create_table;
use super::execute;
use super::spool::Spool;
use crate::base::options::Mode;
use crate::sink::SinkError;
use crate::sink::plan::AlterTable;
use crate::sink::plan::family::FamilyPlan;

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

/// Sends the child rows of a segment, table by table; returns the rows each got.
pub(super) async fn write_children(
    transaction: &tokio_postgres::Transaction<'_>,
    family: &FamilyPlan,
    spool: Option<Spool>,
) -> Result<Vec<u64>, SinkError> {
    match spool {
        Some(spool) => spool.copy_into(transaction, &family.children).await,
        None => Ok(vec![0; family.children.len()]),
    }
}
