//! Which PostgreSQL to connect to, resolved the way libpq users expect.
//!
//! Precedence: `--database-url`, then `DATABASE_URL`, then libpq's `PG*` variables (PGHOST,
//! PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT). The password is kept
//! inside tokio-postgres's `Config` and never formatted into any message.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode};

use super::SinkError;
use crate::source::error_chain;
use crate::tls::{self, Verify};

/// Resolved connection settings.
#[derive(Clone)]
pub struct ConnectOptions {
    config: tokio_postgres::Config,
    verify: Verify,
    root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Config's Debug redacts the password, but a description is all anyone needs.
        f.write_str(&self.describe())
    }
}

/// Removes `key` from a URL's query or a `key=value` connection string, returning its value.
///
/// tokio-postgres rejects `sslmode=verify-full` and `sslrootcert`, which libpq users write;
/// they are taken out here and enforced by [`tls`].
fn take_param(conninfo: &mut String, key: &str) -> Option<String> {
    let is_url = conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://");
    if is_url {
        let (base, query) = conninfo.split_once('?')?;
        let mut value = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some((k, v)) if k == key => {
                    value = Some(v.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        *conninfo = rebuilt;
        value
    } else {
        let mut value = None;
        let kept: Vec<&str> = conninfo
            .split_whitespace()
            .filter(|token| match token.split_once('=') {
                Some((k, v)) if k == key => {
                    value = Some(v.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        *conninfo = kept.join(" ");
        value
    }
}

fn ssl_mode(mode: &str) -> Result<(SslMode, Verify), SinkError> {
    Ok(match mode {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => {
            return Err(SinkError::Config(format!(
                "unknown sslmode {other:?}; use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    })
}

impl ConnectOptions {
    /// Resolves settings from an explicit URL (or `key=value` string), else from `env`.
    ///
    /// # Errors
    /// A connection string tokio-postgres cannot parse, or an unknown sslmode.
    pub fn resolve(
        database_url: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectOptions, SinkError> {
        let url = database_url
            .map(str::to_string)
            .or_else(|| env("DATABASE_URL"))
            .filter(|u| !u.trim().is_empty());
        let (mut config, mode, root_cert) = match url {
            Some(mut url) => {
                let mode = take_param(&mut url, "sslmode");
                let root_cert = take_param(&mut url, "sslrootcert");
                let config = tokio_postgres::Config::from_str(&url).map_err(|e| {
                    SinkError::Config(format!("invalid database URL: {}", error_chain(&e)))
                })?;
                (config, mode, root_cert)
            }
            None => {
                let mut config = tokio_postgres::Config::new();
                config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
                if let Some(port) = env("PGPORT") {
                    config.port(port.parse().map_err(|_| {
                        SinkError::Config(format!("PGPORT {port:?} is not a port number"))
                    })?);
                }
                let user = env("PGUSER")
                    .or_else(|| env("USER"))
                    .unwrap_or_else(|| "postgres".into());
                config.dbname(env("PGDATABASE").as_deref().unwrap_or(&user));
                config.user(&user);
                (config, None, None)
            }
        };
        if config.get_password().is_none()
            && let Some(password) = env("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_user().is_none() {
            config.user(
                env("PGUSER")
                    .or_else(|| env("USER"))
                    .as_deref()
                    .unwrap_or("postgres"),
            );
        }
        let mode = mode.or_else(|| env("PGSSLMODE"));
        let (ssl, verify) = ssl_mode(mode.as_deref().unwrap_or("prefer"))?;
        config.ssl_mode(ssl);
        config.application_name("apitap");
        let root_cert = root_cert
            .or_else(|| env("PGSSLROOTCERT"))
            .map(PathBuf::from);
        Ok(ConnectOptions {
            config,
            verify,
            root_cert,
        })
    }

    /// `user@host:port/dbname`, without the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = self
                    .config
                    .get_ports()
                    .get(i)
                    .or(self.config.get_ports().first())
                    .copied()
                    .unwrap_or(5432);
                match h {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(path) => format!("{}:{port}", path.display()),
                }
            })
            .collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or("?"),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("?")
        )
    }

    /// Opens a connection and drives it on the runtime.
    ///
    /// # Errors
    /// The server cannot be reached, refuses the login, or the TLS setup fails.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, SinkError> {
        let connector =
            tls::connector(self.verify, self.root_cert.as_deref()).map_err(SinkError::Config)?;
        let (client, connection) =
            self.config
                .connect(connector)
                .await
                .map_err(|e| SinkError::Connect {
                    target: self.describe(),
                    reason: error_chain(&e),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // The server's own reason (an administrator's pg_terminate_backend, a
                // shutdown) arrives only here; the failing statement just sees the close.
                match e.as_db_error() {
                    Some(db) => tracing::warn!(
                        "PostgreSQL ended the connection: {} ({})",
                        db.message(),
                        db.code().code()
                    ),
                    None => tracing::debug!(error = %e, "postgres connection closed with an error"),
                }
            }
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn url_beats_env_and_keeps_libpq_sslmodes() {
        let o = ConnectOptions::resolve(
            Some("postgres://u:secret@db:6543/app?sslmode=verify-full&connect_timeout=5"),
            env(&[("PGHOST", "other")]),
        )
        .unwrap();
        assert_eq!(o.describe(), "u@db:6543/app");
        assert_eq!(o.verify, Verify::Full);
        assert!(!format!("{o:?}").contains("secret"));
    }

    #[test]
    fn pg_variables_fill_in() {
        let o = ConnectOptions::resolve(
            None,
            env(&[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", "5433"),
                ("PGUSER", "me"),
                ("PGSSLMODE", "require"),
                ("PGPASSWORD", "pw"),
            ]),
        )
        .unwrap();
        assert_eq!(o.describe(), "me@127.0.0.1:5433/me");
        assert_eq!(o.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(o.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn key_value_strings_and_bad_modes() {
        let o = ConnectOptions::resolve(Some("host=h dbname=d user=u sslmode=verify-ca"), env(&[]))
            .unwrap();
        assert_eq!(o.verify, Verify::Chain);
        assert_eq!(o.describe(), "u@h:5432/d");
        let err = ConnectOptions::resolve(Some("host=h sslmode=bogus"), env(&[])).unwrap_err();
        assert!(err.to_string().contains("unknown sslmode \"bogus\""));
    }
}
