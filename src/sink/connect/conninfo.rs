//! libpq's connection parameters, read as libpq reads them, so that a connection URL, a
//! `key=value` string, the `PG*` variables, a service file and `.pgpass` mean for apitap
//! exactly what they mean for psql.
//!
//! A parameter comes from the first of: the connection string (or a YAML target's own
//! settings), the service it names (`service=`, else `PGSERVICE`), the environment, then
//! libpq's defaults. As in libpq, a value given empty (`user=''`, `PGUSER=`) is given — it
//! hides the sources after it — and means the default. A password not given is looked up in
//! the password file, per host ([`pgpass`]).

mod parse;
pub(crate) mod pgpass;
mod service;

use std::collections::BTreeMap;
use std::path::Path;

pub(crate) use parse::parse;

/// Every keyword libpq knows, with the variable that sets it when nothing else does.
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("service", Some("PGSERVICE")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslpassword", None),
    ("sslcertmode", Some("PGSSLCERTMODE")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("replication", None),
];

/// A connection string, service file or password file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConninfoError {
    #[error("invalid connection string: {0}")]
    Syntax(String),
    #[error("invalid connection option {0:?}")]
    UnknownKeyword(String),
    #[error("definition of service {service:?} not found (looked in {looked})")]
    NoService { service: String, looked: String },
    #[error("service file {path}, line {line}: {reason}")]
    ServiceFile {
        path: std::path::PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "could not look up the name of this process's user, to log in as: {0}; set user= or PGUSER"
    )]
    NoUser(String),
}

/// Resolved parameters, by keyword.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Params(BTreeMap<String, String>);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        let shown: Vec<(&String, &str)> = self
            .0
            .iter()
            .map(|(k, v)| (k, if k == "password" { "***" } else { v.as_str() }))
            .collect();
        f.debug_map().entries(shown).finish()
    }
}

impl Params {
    /// The value of `keyword` when it is given and not empty: an empty value means the
    /// default, as in libpq.
    pub(crate) fn get(&self, keyword: &str) -> Option<&str> {
        self.0
            .get(keyword)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn fill(&mut self, keyword: &str, value: String) {
        self.0.entry(keyword.to_string()).or_insert(value);
    }

    /// The parameters for `conninfo` (a `postgres://` URL or `key=value` pairs) with
    /// `settings` (a YAML target's own, below the string), the service and `env`; `home` is
    /// where `~/.pg_service.conf` is.
    ///
    /// # Errors
    /// A string that does not parse, an unknown keyword, a missing service.
    pub(crate) fn resolve(
        conninfo: Option<&str>,
        settings: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Params, ConninfoError> {
        let mut params = Params::default();
        let known = |keyword: &str| {
            if is_keyword(keyword) {
                Ok(())
            } else {
                Err(ConninfoError::UnknownKeyword(keyword.to_string()))
            }
        };
        // Within the string, a keyword given twice takes its last value, as in libpq.
        for (keyword, value) in conninfo.map(parse).transpose()?.unwrap_or_default() {
            known(&keyword)?;
            params.0.insert(keyword, value);
        }
        for (keyword, value) in settings {
            known(keyword)?;
            params.fill(keyword, value.clone());
        }
        let service = params
            .0
            .get("service")
            .cloned()
            .or_else(|| env("PGSERVICE"));
        if let Some(service) = service {
            for (keyword, value) in service::service_params(&service, env, home)? {
                params.fill(&keyword, value);
            }
        }
        for (keyword, var) in KEYWORDS {
            if let Some(value) = var.and_then(env) {
                params.fill(keyword, value);
            }
        }
        Ok(params)
    }
}

/// Whether libpq knows `keyword`.
fn is_keyword(keyword: &str) -> bool {
    KEYWORDS.iter().any(|(k, _)| *k == keyword)
}

/// The user name libpq falls back on: the name of the account the process runs as (its
/// effective uid), whatever `USER` or `LOGNAME` say.
///
/// # Errors
/// The account has no name (a uid missing from the password database, as in some containers).
pub(crate) fn os_user() -> Result<String, ConninfoError> {
    whoami::username().map_err(|e| ConninfoError::NoUser(e.to_string()))
}

/// Where libpq looks for a server's socket when no host is given: the folder holding a socket
/// for `port` among Debian's `/var/run/postgresql` and the usual `/tmp`, else the first of
/// them that exists (where the connection then fails as libpq's would).
pub(crate) fn default_socket_dir(port: u16) -> &'static str {
    const FOLDERS: [&str; 2] = ["/var/run/postgresql", "/tmp"];
    FOLDERS
        .into_iter()
        .find(|dir| Path::new(dir).join(format!(".s.PGSQL.{port}")).exists())
        .or_else(|| FOLDERS.into_iter().find(|dir| Path::new(dir).is_dir()))
        .unwrap_or("/tmp")
}

#[cfg(test)]
mod tests;
