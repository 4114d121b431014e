//! What `apitap load` says once a load is done: the summary on stderr, and with
//! `--summary-json` the same as JSON for scripts.

use anyhow::Context as _;

use super::LoadArgs;
use crate::base::options::Mode;
use crate::cli::{output, peak_rss_bytes};
use crate::load::Load;
use crate::pipeline::LoadSummary;

pub(super) fn report(args: &LoadArgs, load: &Load, summary: &LoadSummary) -> anyhow::Result<()> {
    let f = summary.figures;
    if !args.quiet {
        crate::base::say(&format!(
            "apitap: loaded {} into {}{}: {}",
            load.source.source,
            summary.table,
            if summary.created_table {
                " (created)"
            } else {
                ""
            },
            f.line()
        ));
    }
    if let Some(line) = child_tables(summary).filter(|_| !args.quiet) {
        crate::base::say(&line);
    }
    if !args.quiet {
        for (_, why) in &summary.paging_stopped {
            crate::base::say(&format!("apitap: paging stopped: {why}"));
        }
    }
    if !summary.renamed_fields.is_empty() && !args.quiet {
        let renamed: Vec<String> = summary
            .renamed_fields
            .iter()
            .map(|(field, column)| format!("{field:?} → {column:?}"))
            .collect();
        crate::base::say(&format!(
            "apitap: {} field name(s) PostgreSQL cannot take as they are load into other columns of {}: {}",
            renamed.len(),
            summary.table,
            renamed.join(", ")
        ));
    }
    if !summary.added_columns.is_empty() && !args.quiet {
        crate::base::say(&format!(
            "apitap: added {} column(s) to {} for new fields: {}",
            summary.added_columns.len(),
            summary.table,
            summary.added_columns.join(", ")
        ));
    }
    if !summary.widened_columns.is_empty() && !args.quiet {
        crate::base::say(&format!(
            "apitap: widened {} column(s) of {} for sampled values their types could not hold: {}",
            summary.widened_columns.len(),
            summary.table,
            summary.widened_columns.join(", ")
        ));
    }
    if !summary.discarded_fields.is_empty() && !args.quiet {
        crate::base::say(&format!(
            "apitap: discarded {} field(s) without a column in {}: {}",
            summary.discarded_fields.len(),
            summary.table,
            summary.discarded_fields.join(", ")
        ));
    }
    if let Some(path) = &args.summary_json {
        let json = serde_json::json!({
            "source": load.source_name(),
            "table": summary.table.to_string(),
            "mode": match load.write.mode { Mode::Append => "append", Mode::Replace => "replace", Mode::Merge => "merge" },
            "created_table": summary.created_table,
            "rows": f.rows,
            "bytes": f.bytes,
            "seconds": (f.seconds * 1000.0).round() / 1000.0,
            "rows_per_second": f.rows_per_second().round() as u64,
            "retries": f.retries,
            "pages": f.pages,
            "paging_stopped": summary.paging_stopped.first().map(|(_, why)| why),
            "throttle_waits": f.throttle_waits,
            "rejected": f.rejected,
            "cursor": summary.cursor,
            "added_columns": summary.added_columns,
            "renamed_fields": summary.renamed_fields.iter().map(|(field, column)| serde_json::json!({"field": field, "column": column})).collect::<Vec<_>>(),
            "widened_columns": summary.widened_columns,
            "discarded_fields": summary.discarded_fields,
            "child_tables": summary.child_tables.iter().map(|c| serde_json::json!({
                "table": c.table.to_string(),
                "rows": c.rows,
                "created_table": c.created_table,
                "added_columns": c.added_columns,
            })).collect::<Vec<_>>(),
            "peak_rss_bytes": peak_rss_bytes(),
        });
        output::write_json_lines(path, &[json])
            .with_context(|| format!("could not write --summary-json {}", path.display()))?;
    }
    Ok(())
}

/// `--nested tables`: what each child table got, as one line.
fn child_tables(summary: &LoadSummary) -> Option<String> {
    if summary.child_tables.is_empty() {
        return None;
    }
    let children: Vec<String> = summary
        .child_tables
        .iter()
        .map(|c| {
            let created = if c.created_table { " (created)" } else { "" };
            let added = match c.added_columns.is_empty() {
                true => String::new(),
                false => format!(", added column(s) {}", c.added_columns.join(", ")),
            };
            format!("{}{created}: {} rows{added}", c.table, c.rows)
        })
        .collect();
    Some(format!("apitap: child tables: {}", children.join("; ")))
}
