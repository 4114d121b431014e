//! The reject file of one load (`--on-error reject`): records that do not decode, from the
//! decode stage, and rows the server refuses, from the sink, as JSON lines.
//!
//! It is written as `PATH.partial`, flushed to disk before the load's COMMIT and renamed to
//! `PATH` after it; a failed load removes it, so a reject file never describes rows that were
//! not loaded either, and a committed load always has its rejects on disk. If the rename
//! fails after the commit, the partial file stays and the message names it.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::progress::Progress;

/// `--on-error reject`: where set-aside records go, and how many may be.
#[derive(Debug, Clone)]
pub(crate) struct RejectOptions {
    pub path: PathBuf,
    /// Fail the load once more records than this are rejected.
    pub max: Option<u64>,
}

impl RejectOptions {
    /// Rejects are written here first and renamed to `path` only when the load commits, so a
    /// failed load leaves no reject file describing rows that were never loaded either.
    pub(crate) fn partial_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".partial");
        name.into()
    }
}

/// One load's reject file, shared by the stages that set rows aside.
#[derive(Debug)]
pub(crate) struct RejectFile {
    options: RejectOptions,
    source_name: String,
    writer: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
    /// The partial file exists (and is removed on drop unless `keep`).
    created: std::sync::atomic::AtomicBool,
    /// The load committed but the rename failed: the partial file is all the user has.
    keep: std::sync::atomic::AtomicBool,
    count: AtomicU64,
    progress: Arc<Progress>,
    /// A preview's: nothing is written; the first few entries are kept to show.
    preview: Option<Mutex<Vec<String>>>,
}

/// How many rows set aside a preview keeps to show.
const PREVIEW_SHOWN: usize = 10;

/// Why a row could not be set aside.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RejectError {
    #[error("could not write the reject file {path}: {error}")]
    Write {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// More rows were rejected than `--max-rejects` allows.
    #[error("{count} records were rejected, more than --max-rejects {max} allows")]
    TooMany { count: u64, max: u64 },
    /// After the commit: the rows are in, but the file kept its temporary name.
    #[error(
        "the load committed, but its reject file could not be renamed to {path} ({error}); \
         the rejected records are in {partial}"
    )]
    NotPublished {
        path: std::path::PathBuf,
        partial: std::path::PathBuf,
        error: std::io::Error,
    },
}

impl RejectFile {
    pub(crate) fn new(
        options: &RejectOptions,
        source_name: String,
        progress: Arc<Progress>,
    ) -> Arc<RejectFile> {
        Arc::new(RejectFile::build(options, source_name, progress, None))
    }

    fn build(
        options: &RejectOptions,
        source_name: String,
        progress: Arc<Progress>,
        preview: Option<Mutex<Vec<String>>>,
    ) -> RejectFile {
        RejectFile {
            options: options.clone(),
            source_name,
            writer: Mutex::new(None),
            created: std::sync::atomic::AtomicBool::new(false),
            keep: std::sync::atomic::AtomicBool::new(false),
            count: AtomicU64::new(0),
            progress,
            preview,
        }
    }

    /// A reject file for `--preview`: it writes nothing (a preview leaves no file behind,
    /// nor touches one a running load is writing) and keeps the first entries to show.
    pub(crate) fn preview(
        options: &RejectOptions,
        source_name: String,
        progress: Arc<Progress>,
    ) -> Arc<RejectFile> {
        let kept = Some(Mutex::new(Vec::new()));
        Arc::new(RejectFile::build(options, source_name, progress, kept))
    }

    /// What a preview set aside (the first few), as the reject file would hold it.
    pub(crate) fn previewed(&self) -> Vec<String> {
        self.preview
            .as_ref()
            .and_then(|kept| kept.lock().ok().map(|k| k.clone()))
            .unwrap_or_default()
    }

    /// Sets one record aside: its number in the load, its input line where known, why, and
    /// its text.
    ///
    /// # Errors
    /// The file cannot be written, or this reject is one more than `--max-rejects` allows.
    pub(crate) fn add(
        &self,
        record: u64,
        line: Option<u64>,
        reason: &str,
        text: &str,
    ) -> Result<(), RejectError> {
        let entry = serde_json::json!({
            "source": self.source_name,
            "record": record,
            "line": line,
            "reason": reason,
            "record_text": text,
        });
        if let Some(kept) = &self.preview {
            if let Ok(mut kept) = kept.lock()
                && kept.len() < PREVIEW_SHOWN
            {
                kept.push(crate::base::secrets::redact(&entry.to_string()).into_owned());
            }
        } else {
            let path = self.options.partial_path();
            let failed = |error| RejectError::Write {
                path: path.clone(),
                error,
            };
            let mut writer = self
                .writer
                .lock()
                .map_err(|_| failed(std::io::Error::other("a stage panicked")))?;
            if writer.is_none() {
                let file = std::fs::File::create(&path).map_err(failed)?;
                self.created.store(true, Ordering::Relaxed);
                *writer = Some(std::io::BufWriter::new(file));
            }
            if let Some(writer) = writer.as_mut() {
                writer
                    .write_all(crate::base::secrets::redact(&format!("{entry}\n")).as_bytes())
                    .map_err(failed)?;
            }
        }
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.progress.add_rejected(1);
        if let Some(max) = self.options.max.filter(|max| count > *max) {
            return Err(RejectError::TooMany { count, max });
        }
        Ok(())
    }

    /// Writes everything set aside through to the disk; called just before the load's
    /// COMMIT, so that a committed load never lacks its rejects.
    ///
    /// # Errors
    /// The file cannot be flushed or synced (the load then fails before committing).
    pub(crate) fn seal(&self) -> Result<(), RejectError> {
        let path = self.options.partial_path();
        let failed = |error| RejectError::Write {
            path: path.clone(),
            error,
        };
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let file = writer.into_inner().map_err(|e| failed(e.into_error()))?;
            file.sync_all().map_err(failed)?;
        }
        Ok(())
    }

    /// Renames the sealed file to its final name; called once the load committed.
    ///
    /// # Errors
    /// The rename fails: the partial file is then kept, and the error names it.
    pub(crate) fn publish(&self) -> Result<(), RejectError> {
        self.seal()?;
        if !self.created.load(Ordering::Relaxed) {
            return Ok(());
        }
        let partial = self.options.partial_path();
        let renamed = std::fs::rename(&partial, &self.options.path).and_then(|()| {
            // The rename itself durable too: sync the folder that holds the name.
            let folder = match self.options.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            std::fs::File::open(folder)?.sync_all()
        });
        if let Err(error) = renamed {
            self.keep.store(true, Ordering::Relaxed);
            return Err(RejectError::NotPublished {
                path: self.options.path.clone(),
                partial,
                error,
            });
        }
        self.created.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for RejectFile {
    fn drop(&mut self) {
        // Not published: the load failed, and its rejects describe nothing that happened.
        if *self.created.get_mut() && !*self.keep.get_mut() {
            let _ = std::fs::remove_file(self.options.partial_path());
        }
    }
}

/// One row as a JSON object, for the reject file.
pub(crate) fn row_json(batch: &arrow_array::RecordBatch, row: usize) -> String {
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    match writer
        .write(&batch.slice(row, 1))
        .and_then(|()| writer.finish())
    {
        Ok(()) => String::from_utf8_lossy(&writer.into_inner())
            .trim_end()
            .to_string(),
        Err(e) => format!("(the row could not be shown: {e})"),
    }
}
