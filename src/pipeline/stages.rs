//! The stages of a load upstream of the writer, joined to learn whether they ended
//! cleanly: only then may the writer commit.

use super::LoadError;
use super::encode_stage;

/// The stages upstream of the encoder, joined to find out whether they ended cleanly.
pub(crate) struct Stages {
    /// In stream order.
    pub(super) tasks: Vec<tokio::task::JoinHandle<Result<(), LoadError>>>,
    pub(super) source_name: String,
}

pub(super) fn joined(
    result: Result<Result<(), LoadError>, tokio::task::JoinError>,
) -> Result<(), LoadError> {
    result.map_err(|e| LoadError::Internal(format!("a load stage panicked: {e}")))?
}

impl Stages {
    /// One task producing the batches, labelled `source_name` in messages.
    #[cfg(feature = "sql")]
    pub(crate) fn single(
        task: tokio::task::JoinHandle<Result<(), LoadError>>,
        source_name: String,
    ) -> Stages {
        Stages {
            tasks: vec![task],
            source_name,
        }
    }

    /// Waits for every stage; the first error in stream order wins, since a later stage's
    /// error is often a consequence (a body cut short looks like malformed JSON).
    pub(crate) async fn join(self) -> Result<(), LoadError> {
        let mut result = Ok(());
        for task in self.tasks {
            let outcome = joined(task.await);
            result = result.and(outcome);
        }
        result
    }

    /// Waits for every stage and then the encode stage; their first error in stream order,
    /// or what the encode stage handed on at the end.
    pub(super) async fn check(
        self,
        encode: tokio::task::JoinHandle<Result<encode_stage::Ended, LoadError>>,
    ) -> Result<encode_stage::Ended, LoadError> {
        let upstream = self.join().await;
        let encode = encode
            .await
            .map_err(|e| LoadError::Internal(format!("a load stage panicked: {e}")))?;
        upstream.and(encode)
    }

    /// Stops the stages before their end (a preview has its rows): async stages are
    /// aborted; a blocking one ends at its next send, its receiver being gone.
    pub(crate) fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// For when a stage stopped early: the reason it returned.
    pub(crate) async fn first_error(self) -> LoadError {
        let source_name = self.source_name.clone();
        match self.join().await {
            Err(e) => e,
            Ok(()) => LoadError::Internal(format!(
                "{source_name}: the decode stage stopped without a reason"
            )),
        }
    }
}
