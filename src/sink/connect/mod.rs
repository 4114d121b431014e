//! Which PostgreSQL to connect to, and how, resolved as libpq resolves it.
//!
//! The connection string is `--database-url`, else `DATABASE_URL` (a YAML target's `url:`,
//! `url_env:` or its own keys); [`conninfo`] fills in the service and the `PG*` variables,
//! [`hosts`] works out the host list and each host's password (`.pgpass`), [`tls`] reads
//! `sslmode` and its files, and [`dial`] tries the hosts as libpq does. The password is never
//! formatted into any message. `tests/it/libpq` holds this to psql, case by case.
//!
//! One difference from libpq, on purpose: without `connect_timeout`, a connection attempt
//! gives up after [`DEFAULT_CONNECT_TIMEOUT`] per address instead of waiting forever (a load
//! started by cron must not hang on a server that accepts and never answers). An explicit
//! `connect_timeout=0` waits forever, as libpq does.

pub(crate) mod conninfo;
mod dial;
mod hosts;
pub(crate) mod tls;

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, SslNegotiation};

use super::SinkError;
use crate::base::error_chain;
use conninfo::{ConninfoError, Params, os_user};
use dial::SessionWanted;
use hosts::{Address, Host};
use tls::{TlsSettings, TlsSetupError};

/// How long one address may take to accept, encrypt and log in, when the settings do not say.
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
    /// Host, hostaddr and port lists that do not pair up.
    #[error("{0}")]
    Mismatch(String),
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
    /// Who logs in to what, with which session settings, TLS negotiation and socket options;
    /// its hosts and password are set per attempt.
    config: tokio_postgres::Config,
    hosts: Vec<Host>,
    tls: std::sync::Arc<tls::Tls>,
    /// Per address; `None` waits forever (`connect_timeout=0`).
    connect_timeout: Option<Duration>,
    session: SessionWanted,
    load_balance: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A description is all anyone needs, and holds no password.
        f.write_str(&self.describe())
    }
}

/// Where `~/.pgpass`, `~/.pg_service.conf` and `~/.postgresql` are: `HOME`, else the
/// account's home folder, as libpq looks.
fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Some(PathBuf::from(home)),
        None => std::env::home_dir(),
    }
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
        let user = match params.get("user") {
            Some(user) => user.to_string(),
            None => os_user()?,
        };
        let dbname = params.get("dbname").unwrap_or(&user).to_string();
        config.user(&user).dbname(&dbname);
        if let Some(options) = session_options(&params, env) {
            config.options(&options);
        }
        // As psql does, its own name stands in when no application_name is given.
        config.application_name(params.get("application_name").unwrap_or("apitap"));
        let connect_timeout = connect_timeout(&params)?;
        apply_tcp_settings(&mut config, &params)?;
        let (session, load_balance) = apply_choices(&mut config, &params)?;
        let password_file = params
            .get("passfile")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".pgpass")));
        let hosts = hosts::hosts(&params, &dbname, &user, password_file)?;
        let settings = TlsSettings {
            mode: params.get("sslmode").map(str::parse).transpose()?,
            root_cert: params.get("sslrootcert").map(str::to_string),
            cert: (params.get("sslcertmode") != Some("disable"))
                .then(|| params.get("sslcert").map(PathBuf::from))
                .flatten(),
            key: params.get("sslkey").map(PathBuf::from),
            min_version: params.get("ssl_min_protocol_version").map(str::to_string),
            max_version: params.get("ssl_max_protocol_version").map(str::to_string),
            sni: params.get("sslsni") != Some("0"),
            home: home.filter(|_| params.get("sslcertmode") != Some("disable")),
        };
        let tls = match tls::setup(&settings) {
            // libpq reads the root file when it starts TLS, which it never does on a socket.
            Err(TlsSetupError::NoRootFile(_))
                if hosts
                    .iter()
                    .all(|h| matches!(h.address, Address::Socket(_))) =>
            {
                tls::setup(&TlsSettings {
                    mode: Some(tls::SslMode::Disable),
                    ..settings
                })
            }
            other => other,
        }?;
        Ok(ConnectOptions {
            config,
            hosts,
            tls: std::sync::Arc::new(tls),
            connect_timeout,
            session,
            load_balance,
        })
    }

    /// Whether every host is this machine (a socket, `localhost`, a loopback address): the
    /// server's backends then share the client's cores.
    pub(crate) fn server_is_local(&self) -> bool {
        self.hosts.iter().all(|host| match &host.address {
            Address::Socket(_) => true,
            Address::Ip { ip, .. } => ip.is_loopback(),
            Address::Name(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
    }

    /// `user@host:port,…/dbname`, without the password.
    pub(crate) fn describe(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(Host::describe).collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or("?"),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("?")
        )
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

/// `options`, with the session settings libpq sends from `PGDATESTYLE`, `PGTZ` and `PGGEQO`
/// (unless `default`) added as `-c` settings: the same session either way.
fn session_options(params: &Params, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut options: Vec<String> = params
        .get("options")
        .map(str::to_string)
        .into_iter()
        .collect();
    for (var, setting) in [
        ("PGDATESTYLE", "datestyle"),
        ("PGTZ", "timezone"),
        ("PGGEQO", "geqo"),
    ] {
        if let Some(value) = env(var).filter(|v| !v.eq_ignore_ascii_case("default")) {
            // In options, a backslash escapes a blank or a backslash.
            let escaped: String = value
                .chars()
                .flat_map(|c| {
                    (c.is_whitespace() || c == '\\')
                        .then_some('\\')
                        .into_iter()
                        .chain([c])
                })
                .collect();
            options.push(format!("-c {setting}={escaped}"));
        }
    }
    (!options.is_empty()).then(|| options.join(" "))
}

/// `connect_timeout`: at least 2 s as in libpq, 0 or less waits forever, none gives
/// [`DEFAULT_CONNECT_TIMEOUT`].
fn connect_timeout(params: &Params) -> Result<Option<Duration>, ConnectError> {
    let Some(text) = params.get("connect_timeout") else {
        return Ok(Some(DEFAULT_CONNECT_TIMEOUT));
    };
    match text.trim().parse::<i64>() {
        Ok(secs) if secs <= 0 => Ok(None),
        Ok(secs) => Ok(Some(Duration::from_secs(secs.max(2).unsigned_abs()))),
        Err(_) => Err(ConnectError::Invalid {
            keyword: "connect_timeout",
            value: text.to_string(),
            expected: "a whole number of seconds",
        }),
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

/// The keyword settings with a fixed set of values; gives the session `target_session_attrs`
/// wants and whether `load_balance_hosts=random`.
fn apply_choices(
    config: &mut tokio_postgres::Config,
    params: &Params,
) -> Result<(SessionWanted, bool), ConnectError> {
    let invalid =
        |keyword: &'static str, value: &str, expected: &'static str| ConnectError::Invalid {
            keyword,
            value: value.to_string(),
            expected,
        };
    let session = match params.get("target_session_attrs").unwrap_or("any") {
        "any" => SessionWanted::Any,
        "read-write" => SessionWanted::ReadWrite,
        "read-only" => SessionWanted::ReadOnly,
        "primary" => SessionWanted::Primary,
        "standby" => SessionWanted::Standby,
        "prefer-standby" => SessionWanted::PreferStandby,
        v => {
            return Err(invalid(
                "target_session_attrs",
                v,
                "any, read-write, read-only, primary, standby or prefer-standby",
            ));
        }
    };
    if let Some(v) = params.get("channel_binding") {
        config.channel_binding(match v {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            _ => return Err(invalid("channel_binding", v, "disable, prefer or require")),
        });
    }
    let load_balance = match params.get("load_balance_hosts").unwrap_or("disable") {
        "disable" => false,
        "random" => true,
        v => return Err(invalid("load_balance_hosts", v, "disable or random")),
    };
    if let Some(v) = params.get("sslnegotiation") {
        config.ssl_negotiation(match v {
            "postgres" => SslNegotiation::Postgres,
            "direct" => SslNegotiation::Direct,
            _ => return Err(invalid("sslnegotiation", v, "postgres or direct")),
        });
    }
    Ok((session, load_balance))
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
