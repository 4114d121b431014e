//! Connecting as libpq connects. Hosts are tried in order (shuffled with
//! `load_balance_hosts=random`), and each address of a host name in turn. Only a host that
//! cannot be used passes the attempt on to the next: its socket does not open, it does not
//! answer within `connect_timeout`, it is not yet accepting connections (57P03), or its
//! session is not what `target_session_attrs` asks for. Once a server has answered the login
//! its answer is final, as in libpq: a refused password is not sent on to the next host.
//!
//! TLS is never asked for on a Unix socket (libpq ignores `sslmode` there). With
//! `sslmode=allow` the login is tried without TLS first, and again asking for TLS if the
//! server refuses it.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::SslMode as WireSsl;
use tokio_postgres::tls::MakeTlsConnect;

use super::ConnectOptions;
use super::hosts::{Address, Host};
use super::tls::SslMode;
use crate::base::error_chain;
use crate::sink::SinkError;

/// What kind of session `target_session_attrs` wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionWanted {
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
    /// A standby if any host is one, else any.
    PreferStandby,
}

/// Why one address gave no connection.
enum Failure {
    /// This host cannot be used; the next may.
    Unusable(String),
    /// The server answered the login with an error (final, but `sslmode=allow` retries it
    /// with TLS).
    Refused(String),
    /// Anything else after the socket opened: final.
    Failed(String),
}

/// One way to reach a host.
enum Endpoint {
    Tcp(SocketAddr),
    Socket(PathBuf),
}

impl ConnectOptions {
    /// Opens a connection and drives it on the runtime.
    ///
    /// # Errors
    /// No host can be reached in time, the server refuses the login, or its certificate is
    /// refused (said in libpq's terms).
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client, SinkError> {
        let mut hosts: Vec<&Host> = self.hosts.iter().collect();
        if self.load_balance {
            shuffle(&mut hosts);
        }
        let passes = match self.session {
            SessionWanted::PreferStandby => vec![SessionWanted::Standby, SessionWanted::Any],
            wanted => vec![wanted],
        };
        let mut reasons = Vec::new();
        for wanted in passes {
            for host in &hosts {
                match self.connect_host(host, wanted).await {
                    Ok(client) => return Ok(client),
                    Err(Failure::Unusable(reason)) => reasons.push((host.describe(), reason)),
                    Err(Failure::Refused(reason) | Failure::Failed(reason)) => {
                        return Err(self.failed(vec![(host.describe(), reason)]));
                    }
                }
            }
        }
        Err(self.failed(reasons))
    }

    fn failed(&self, mut reasons: Vec<(String, String)>) -> SinkError {
        let reason = if reasons.len() == 1 {
            reasons.pop().map(|(_, reason)| reason).unwrap_or_default()
        } else {
            let each: Vec<String> = reasons
                .iter()
                .map(|(host, r)| format!("{host}: {r}"))
                .collect();
            each.join("; ")
        };
        SinkError::Connect {
            target: self.describe(),
            reason,
        }
    }

    /// Each address of `host` in turn, until one connects or the host is refused.
    async fn connect_host(
        &self,
        host: &Host,
        wanted: SessionWanted,
    ) -> Result<tokio_postgres::Client, Failure> {
        let endpoints = match &host.address {
            Address::Socket(dir) => vec![Endpoint::Socket(
                dir.join(format!(".s.PGSQL.{}", host.port)),
            )],
            Address::Ip { ip, .. } => vec![Endpoint::Tcp(SocketAddr::new(*ip, host.port))],
            Address::Name(name) => {
                let mut found: Vec<Endpoint> = tokio::net::lookup_host((name.as_str(), host.port))
                    .await
                    .map_err(|e| {
                        Failure::Unusable(format!(
                            "could not translate host name {name:?} to address: {}",
                            error_chain(&e)
                        ))
                    })?
                    .map(Endpoint::Tcp)
                    .collect();
                if self.load_balance {
                    shuffle(&mut found);
                }
                found
            }
        };
        let mut last = Failure::Unusable(format!("host name {:?} has no address", host.tls_name()));
        for endpoint in &endpoints {
            let modes: &[WireSsl] = match (endpoint, self.tls.mode) {
                (Endpoint::Socket(_), _) | (_, SslMode::Disable) => &[WireSsl::Disable],
                (_, SslMode::Allow) => &[WireSsl::Disable, WireSsl::Prefer],
                (_, SslMode::Prefer) => &[WireSsl::Prefer],
                _ => &[WireSsl::Require],
            };
            for (i, ssl) in modes.iter().enumerate() {
                match self
                    .within_timeout(self.attempt(host, endpoint, *ssl, wanted))
                    .await
                {
                    Ok(client) => return Ok(client),
                    Err(Failure::Refused(r)) if i + 1 < modes.len() => last = Failure::Refused(r),
                    Err(failure @ Failure::Unusable(_)) => {
                        last = failure;
                        break;
                    }
                    Err(failure) => return Err(failure),
                }
            }
        }
        Err(last)
    }

    async fn within_timeout(
        &self,
        attempt: impl Future<Output = Result<tokio_postgres::Client, Failure>>,
    ) -> Result<tokio_postgres::Client, Failure> {
        match self.connect_timeout {
            None => attempt.await,
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Unusable(format!(
                        "no answer within {} s (connect_timeout)",
                        limit.as_secs()
                    )))
                }),
        }
    }

    /// One login at one address.
    async fn attempt(
        &self,
        host: &Host,
        endpoint: &Endpoint,
        ssl: WireSsl,
        wanted: SessionWanted,
    ) -> Result<tokio_postgres::Client, Failure> {
        let mut config = self.config.clone();
        config.ssl_mode(ssl);
        if let Some(password) = &host.password {
            config.password(password);
        }
        let client = match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| unreachable(&e))?;
                set_socket_options(&stream, &config).map_err(|e| unreachable(&e))?;
                let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(
                    &mut self.tls.connector.clone(),
                    &host.tls_name(),
                )
                .map_err(|e| Failure::Failed(format!("TLS: {e}")))?;
                let connected = config.connect_raw(stream, tls).await;
                drive(connected.map_err(|e| self.login_failed(&e, host))?)
            }
            Endpoint::Socket(path) => {
                let stream = UnixStream::connect(path).await.map_err(|e| {
                    Failure::Unusable(format!(
                        "socket \"{}\": {}",
                        path.display(),
                        error_chain(&e)
                    ))
                })?;
                let connected = config.connect_raw(stream, tokio_postgres::NoTls).await;
                drive(connected.map_err(|e| self.login_failed(&e, host))?)
            }
        };
        session_is(&client, wanted).await?;
        Ok(client)
    }

    /// The login's error, in libpq's terms where apitap has them.
    fn login_failed(&self, error: &tokio_postgres::Error, host: &Host) -> Failure {
        if let Some(reason) = self.tls.refusal.lock().ok().and_then(|mut r| r.take()) {
            return Failure::Failed(format!("TLS: {reason}"));
        }
        let Some(db) = error.as_db_error() else {
            return Failure::Failed(error_chain(error));
        };
        let mut reason = error_chain(error);
        if db.code() == &tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW {
            return Failure::Unusable(reason);
        }
        if let Some(file) = host
            .password_file
            .as_ref()
            .filter(|_| db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD)
        {
            reason.push_str(&format!(
                " (password retrieved from file \"{}\")",
                file.display()
            ));
        }
        Failure::Refused(reason)
    }
}

fn unreachable(error: &std::io::Error) -> Failure {
    Failure::Unusable(error_chain(error))
}

/// Keepalives and the TCP user timeout, as the settings say.
fn set_socket_options(stream: &TcpStream, config: &tokio_postgres::Config) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(timeout) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout))?;
    }
    Ok(())
}

/// Spawns the connection's task, and hands back its client.
fn drive<S, T>(
    (client, connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
) -> tokio_postgres::Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    client
}

/// Whether the session is what `target_session_attrs` wants, asked as libpq asks.
async fn session_is(client: &tokio_postgres::Client, wanted: SessionWanted) -> Result<(), Failure> {
    let ask = |sql: &'static str| async move {
        let rows = client
            .simple_query(sql)
            .await
            .map_err(|e| Failure::Failed(error_chain(&e)))?;
        Ok::<_, Failure>(rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        }))
    };
    let mismatch = match wanted {
        SessionWanted::Any | SessionWanted::PreferStandby => None,
        SessionWanted::ReadWrite | SessionWanted::ReadOnly => {
            let read_only = ask("SHOW transaction_read_only").await?.as_deref() == Some("on");
            match (wanted, read_only) {
                (SessionWanted::ReadWrite, true) => Some("session is read-only"),
                (SessionWanted::ReadOnly, false) => Some("session is not read-only"),
                _ => None,
            }
        }
        SessionWanted::Primary | SessionWanted::Standby => {
            let standby = ask("SELECT pg_catalog.pg_is_in_recovery()")
                .await?
                .as_deref()
                == Some("t");
            match (wanted, standby) {
                (SessionWanted::Primary, true) => Some("server is in hot standby mode"),
                (SessionWanted::Standby, false) => Some("server is not in hot standby mode"),
                _ => None,
            }
        }
    };
    mismatch.map_or(Ok(()), |m| Err(Failure::Unusable(m.to_string())))
}

/// Puts `items` in a random order (libpq's `load_balance_hosts=random`).
fn shuffle<T>(items: &mut [T]) {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new();
    for i in (1..items.len()).rev() {
        let j = random.hash_one(i) % (i as u64 + 1);
        items.swap(i, usize::try_from(j).unwrap_or(0));
    }
}
