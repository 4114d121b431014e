//! Which PostgreSQL to connect to, and how, resolved as libpq resolves it.
//!
//! The connection string is `--database-url`, else `DATABASE_URL` (a YAML target's `url:`,
//! `url_env:` or its own keys); [`conninfo`] fills in the service, the `PG*` variables and
//! `.pgpass`, and [`tls`] reads `sslmode` and its files. The password stays inside
//! tokio-postgres's `Config` and is never formatted into any message.
//!
//! One difference from libpq, on purpose: without `connect_timeout`, a connection attempt
//! gives up after [`DEFAULT_CONNECT_TIMEOUT`] per host instead of waiting forever (a load
//! started by cron must not hang on a server that accepts and never answers). An explicit
//! `connect_timeout=0` waits forever, as libpq does.

pub(crate) mod conninfo;
pub(crate) mod tls;

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, SslNegotiation};

use super::SinkError;
use crate::base::error_chain;
use conninfo::{ConninfoError, Params, default_host, os_user};
use tls::{SslMode, TlsSettings, TlsSetupError};

/// How long one host may take to accept, encrypt and log in, when the settings do not say.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Conninfo(#[from] ConninfoError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("invalid {keyword} value: {value:?} ({expected})")]
    Invalid {
        keyword: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{keyword}={value} is not supported: {reason}")]
    Unsupported {
        keyword: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Resolved connection settings, with the TLS connector built.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    config: tokio_postgres::Config,
    tls: std::sync::Arc<tls::Tls>,
    /// Per host; `None` waits forever (`connect_timeout=0`).
    connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Config's Debug redacts the password, but a description is all anyone needs.
        f.write_str(&self.describe())
    }
}

/// Where `~/.pgpass`, `~/.pg_service.conf` and `~/.postgresql` are.
fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

impl ConnectOptions {
    /// Resolves the settings from a connection string (else `DATABASE_URL`), the `settings`
    /// a YAML target gives as keywords, and libpq's variables and files in `env`'s `HOME`.
    ///
    /// # Errors
    /// A string or file that cannot be read, a value libpq would refuse, or a setting apitap
    /// cannot honor (named, never silently ignored).
    pub(crate) fn resolve(
        database_url: Option<&str>,
        settings: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectOptions, ConnectError> {
        let url = database_url
            .map(str::to_string)
            .or_else(|| env("DATABASE_URL"))
            .filter(|u| !u.trim().is_empty());
        let home = home(env);
        let params = Params::resolve(url.as_deref(), settings, env, home.as_deref())?;
        refuse_unsupported(&params)?;
        let mut config = tokio_postgres::Config::new();
        let hosts: Vec<String> = params.get("host").filter(|h| !h.is_empty()).map_or_else(
            || vec![default_host(params.get("port"))],
            |h| h.split(',').map(str::to_string).collect(),
        );
        for host in &hosts {
            config.host(if host.is_empty() { "localhost" } else { host });
        }
        if let Some(addrs) = params.get("hostaddr").filter(|a| !a.is_empty()) {
            for addr in addrs.split(',') {
                config.hostaddr(addr.parse().map_err(|_| ConnectError::Invalid {
                    keyword: "hostaddr",
                    value: addr.to_string(),
                    expected: "a numeric IP address",
                })?);
            }
        }
        for port in params.get("port").unwrap_or("").split(',') {
            config.port(match port {
                "" => 5432,
                p => p.parse().map_err(|_| ConnectError::Invalid {
                    keyword: "port",
                    value: p.to_string(),
                    expected: "a port number",
                })?,
            });
        }
        let user = params
            .get("user")
            .map_or_else(|| os_user(env), str::to_string);
        config.dbname(params.get("dbname").unwrap_or(&user));
        config.user(&user);
        if let Some(password) = params.get("password") {
            config.password(password);
        }
        if let Some(options) = params.get("options") {
            config.options(options);
        }
        config.application_name(
            params
                .get("application_name")
                .or(params.get("fallback_application_name"))
                .unwrap_or("apitap"),
        );
        let connect_timeout = match params.get("connect_timeout") {
            None | Some("") => Some(DEFAULT_CONNECT_TIMEOUT),
            Some(text) => match text.trim().parse::<i64>() {
                Ok(secs) if secs <= 0 => None,
                // libpq waits at least 2 s.
                Ok(secs) => Some(Duration::from_secs(secs.max(2).unsigned_abs())),
                Err(_) => {
                    return Err(ConnectError::Invalid {
                        keyword: "connect_timeout",
                        value: text.to_string(),
                        expected: "a whole number of seconds",
                    });
                }
            },
        };
        if let Some(timeout) = connect_timeout {
            config.connect_timeout(timeout);
        }
        apply_tcp_settings(&mut config, &params)?;
        apply_choices(&mut config, &params)?;
        let tls = tls::setup(&TlsSettings {
            mode: params
                .get("sslmode")
                .filter(|m| !m.is_empty())
                .map(str::parse::<SslMode>)
                .transpose()?,
            root_cert: params.get("sslrootcert").map(str::to_string),
            cert: (params.get("sslcertmode") != Some("disable"))
                .then(|| params.get("sslcert").map(PathBuf::from))
                .flatten(),
            key: params.get("sslkey").map(PathBuf::from),
            min_version: params.get("ssl_min_protocol_version").map(str::to_string),
            max_version: params.get("ssl_max_protocol_version").map(str::to_string),
            sni: params.get("sslsni") != Some("0"),
            home: home.filter(|_| params.get("sslcertmode") != Some("disable")),
        })?;
        config.ssl_mode(tls.ssl_mode);
        Ok(ConnectOptions {
            config,
            tls: std::sync::Arc::new(tls),
            connect_timeout,
        })
    }

    /// Whether every host is this machine (a socket, `localhost`, a loopback address): the
    /// server's backends then share the client's cores.
    pub(crate) fn server_is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
    }

    /// `user@host:port/dbname`, without the password.
    pub(crate) fn describe(&self) -> String {
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
    /// The server cannot be reached in time, refuses the login, or its certificate is
    /// refused (said in libpq's terms).
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client, SinkError> {
        let failed = |reason: String| SinkError::Connect {
            target: self.describe(),
            reason,
        };
        let attempt = self.config.connect(self.tls.connector.clone());
        let connected = match self.connect_timeout {
            Some(per_host) => {
                let hosts = self.config.get_hosts().len().max(1) as u32;
                tokio::time::timeout(per_host * hosts, attempt)
                    .await
                    .map_err(|_| {
                        failed(format!(
                            "no answer within {} s (connect_timeout)",
                            per_host.as_secs()
                        ))
                    })?
            }
            None => attempt.await,
        };
        let (client, connection) = connected.map_err(|e| {
            let refusal = self.tls.refusal.lock().ok().and_then(|mut r| r.take());
            failed(match refusal {
                Some(reason) => format!("TLS: {reason}"),
                None => error_chain(&e),
            })
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

    /// A connection on which every transaction is read-only, for `--preview`: what a
    /// preview runs can read the catalog and the state, and could not write by mistake.
    ///
    /// # Errors
    /// As [`ConnectOptions::connect`].
    pub(crate) async fn connect_read_only(&self) -> Result<tokio_postgres::Client, SinkError> {
        let client = self.connect().await?;
        client
            .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .await
            .map_err(|e| SinkError::Connect {
                target: self.describe(),
                reason: format!("could not make the session read-only: {}", error_chain(&e)),
            })?;
        Ok(client)
    }
}

/// Keepalives and the TCP user timeout.
fn apply_tcp_settings(
    config: &mut tokio_postgres::Config,
    params: &Params,
) -> Result<(), ConnectError> {
    let number = |keyword: &'static str| -> Result<Option<u64>, ConnectError> {
        params
            .get(keyword)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| ConnectError::Invalid {
                    keyword,
                    value: v.to_string(),
                    expected: "a whole number",
                })
            })
            .transpose()
    };
    if let Some(on) = number("keepalives")? {
        config.keepalives(on != 0);
    }
    if let Some(secs) = number("keepalives_idle")? {
        config.keepalives_idle(Duration::from_secs(secs));
    }
    if let Some(secs) = number("keepalives_interval")? {
        config.keepalives_interval(Duration::from_secs(secs));
    }
    if let Some(count) = number("keepalives_count")? {
        config.keepalives_retries(u32::try_from(count).unwrap_or(u32::MAX));
    }
    if let Some(ms) = number("tcp_user_timeout")? {
        config.tcp_user_timeout(Duration::from_millis(ms));
    }
    Ok(())
}

/// The keyword settings with a fixed set of values.
fn apply_choices(config: &mut tokio_postgres::Config, params: &Params) -> Result<(), ConnectError> {
    use tokio_postgres::config::TargetSessionAttrs;
    let value = |keyword| params.get(keyword).filter(|v| !v.is_empty());
    let invalid =
        |keyword: &'static str, value: &str, expected: &'static str| ConnectError::Invalid {
            keyword,
            value: value.to_string(),
            expected,
        };
    if let Some(v) = value("target_session_attrs") {
        config.target_session_attrs(match v {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" | "standby" | "prefer-standby" => {
                return Err(ConnectError::Unsupported {
                    keyword: "target_session_attrs",
                    value: v.to_string(),
                    reason: "use any, read-write or read-only",
                });
            }
            _ => {
                return Err(invalid(
                    "target_session_attrs",
                    v,
                    "any, read-write or read-only",
                ));
            }
        });
    }
    if let Some(v) = value("channel_binding") {
        config.channel_binding(match v {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            _ => return Err(invalid("channel_binding", v, "disable, prefer or require")),
        });
    }
    if let Some(v) = value("load_balance_hosts") {
        config.load_balance_hosts(match v {
            "disable" => LoadBalanceHosts::Disable,
            "random" => LoadBalanceHosts::Random,
            _ => return Err(invalid("load_balance_hosts", v, "disable or random")),
        });
    }
    if let Some(v) = value("sslnegotiation") {
        config.ssl_negotiation(match v {
            "postgres" => SslNegotiation::Postgres,
            "direct" => SslNegotiation::Direct,
            _ => return Err(invalid("sslnegotiation", v, "postgres or direct")),
        });
    }
    Ok(())
}

/// libpq settings apitap cannot honor: refused by name rather than ignored.
fn refuse_unsupported(params: &Params) -> Result<(), ConnectError> {
    let unsupported = |keyword: &'static str, reason: &'static str| {
        params
            .get(keyword)
            .filter(|v| !v.is_empty())
            .map(|value| ConnectError::Unsupported {
                keyword,
                value: value.to_string(),
                reason,
            })
    };
    let found = [
        unsupported(
            "sslpassword",
            "decrypt the key first (openssl pkey -in KEY -out PLAIN_KEY)",
        ),
        unsupported("sslcrl", "certificate revocation lists are not checked"),
        unsupported("sslcrldir", "certificate revocation lists are not checked"),
        unsupported("requirepeer", "connect over TCP, or leave it out"),
        unsupported(
            "require_auth",
            "leave it out; use channel_binding=require to insist on SCRAM",
        ),
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(error) = found {
        return Err(error);
    }
    if let Some(v) = params.get("client_encoding") {
        if !matches!(
            v.to_ascii_uppercase().as_str(),
            "" | "UTF8" | "UTF-8" | "AUTO"
        ) {
            return Err(ConnectError::Unsupported {
                keyword: "client_encoding",
                value: v.to_string(),
                reason: "apitap always speaks UTF8 to the server",
            });
        }
    }
    if params.get("gssencmode") == Some("require") {
        return Err(ConnectError::Unsupported {
            keyword: "gssencmode",
            value: "require".into(),
            reason: "GSSAPI encryption is not available; use TLS (sslmode)",
        });
    }
    if params
        .get("replication")
        .is_some_and(|v| !matches!(v, "" | "0" | "false" | "off" | "no"))
    {
        return Err(ConnectError::Unsupported {
            keyword: "replication",
            value: params.get("replication").unwrap_or_default().to_string(),
            reason: "apitap loads over ordinary connections",
        });
    }
    if params.get("sslcertmode") == Some("require") && params.get("sslcert").is_none() {
        return Err(ConnectError::Unsupported {
            keyword: "sslcertmode",
            value: "require".into(),
            reason: "name the client certificate with sslcert",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
