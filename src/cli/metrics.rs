//! `--metrics-listen` and `--metrics-file`, the same for `apitap load` and `apitap run`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::metrics::Metrics;

#[derive(Debug, Args, Clone, Default)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz while
    /// apitap runs: IP:PORT, localhost:PORT, or :PORT for every interface.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, env = "APITAP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// When apitap ends (done, failed or interrupted), write the metrics to this file, e.g.
    /// for node_exporter's textfile collector.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// The process's metrics, serving if asked; none when neither flag is given.
    ///
    /// # Errors
    /// The listen address cannot be bound.
    pub(crate) async fn start(&self) -> anyhow::Result<Option<Arc<Metrics>>> {
        if self.metrics_listen.is_none() && self.metrics_file.is_none() {
            return Ok(None);
        }
        let metrics = Metrics::new();
        if let Some(addr) = self.metrics_listen {
            let bound = metrics.serve(addr).await?;
            tracing::info!(%bound, "serving /metrics and /healthz");
        }
        Ok(Some(metrics))
    }

    /// Writes `--metrics-file`, if given, whatever the `outcome`, which it passes on. A file
    /// that cannot be written fails a run that succeeded; after a failure it is only said,
    /// so that the run's own error stays the one reported.
    ///
    /// # Errors
    /// `outcome`'s, or the file cannot be written.
    pub(crate) fn finish(
        &self,
        metrics: Option<&Arc<Metrics>>,
        outcome: anyhow::Result<super::Outcome>,
    ) -> anyhow::Result<super::Outcome> {
        let (Some(path), Some(metrics)) = (&self.metrics_file, metrics) else {
            return outcome;
        };
        match (metrics.write_file(path), outcome) {
            (Ok(()), outcome) => outcome,
            (Err(error), Ok(_)) => Err(error.into()),
            (Err(error), Err(failed)) => {
                crate::base::say(&format!("apitap: {:#}", anyhow::Error::from(error)));
                Err(failed)
            }
        }
    }
}

/// A `--metrics-listen` value that is no address to listen on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ListenError {
    #[error("{0:?} is not a port number (0 to 65535)")]
    Port(String),
    #[error("{0:?} is not an address to listen on: use IP:PORT, localhost:PORT or :PORT")]
    Address(String),
}

/// `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464` or `:9464` (every interface).
fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| ListenError::Port(p.to_string()))
    };
    if let Some(p) = text.strip_prefix(':') {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port(p)?));
    }
    if let Some(p) = text.strip_prefix("localhost:") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(p)?));
    }
    text.parse()
        .map_err(|_| ListenError::Address(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen(":9464").unwrap(),
            "0.0.0.0:9464".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:9464").unwrap(),
            "[::1]:9464".parse().unwrap()
        );
        assert_eq!(
            parse_listen("example.org:9464").unwrap_err().to_string(),
            "\"example.org:9464\" is not an address to listen on: use IP:PORT, localhost:PORT or :PORT"
        );
        assert_eq!(
            parse_listen(":http").unwrap_err().to_string(),
            "\"http\" is not a port number (0 to 65535)"
        );
    }
}
