//! libpq's connection parameters, read as libpq reads them, so that a connection URL, a
//! `key=value` string, the `PG*` variables, a service file and `.pgpass` mean for apitap
//! exactly what they mean for psql.
//!
//! A parameter comes from the first of: the connection string (or a YAML target's own
//! settings), the service it names (`service=`, else `PGSERVICE`), the environment, then
//! libpq's defaults. A password not given any of those ways is looked up in the password file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        path: PathBuf,
        line: usize,
        reason: String,
    },
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
    pub(crate) fn get(&self, keyword: &str) -> Option<&str> {
        self.0.get(keyword).map(String::as_str)
    }

    fn fill(&mut self, keyword: &str, value: String) {
        self.0.entry(keyword.to_string()).or_insert(value);
    }

    /// The parameters for `conninfo` (a `postgres://` URL or `key=value` pairs) with
    /// `settings` (a YAML target's own, below the string), the service, `env` and the
    /// password file; `home` is where `~/.pgpass` and `~/.pg_service.conf` are.
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
            if KEYWORDS.iter().any(|(k, _)| *k == keyword) {
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
            .get("service")
            .map(str::to_string)
            .or_else(|| env("PGSERVICE"));
        if let Some(service) = service {
            for (keyword, value) in service_params(&service, env, home)? {
                params.fill(&keyword, value);
            }
        }
        for (keyword, var) in KEYWORDS {
            if let Some(value) = var.and_then(env).filter(|v| !v.is_empty()) {
                params.fill(keyword, value);
            }
        }
        if params.get("password").is_none_or(str::is_empty) {
            if let Some(password) = params.password_from_file(env, home) {
                params.0.insert("password".into(), password);
            }
        }
        Ok(params)
    }

    /// The password the password file holds for the first host, port, database and user,
    /// if the file may be read (libpq ignores one others can read, with a warning).
    fn password_from_file(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Option<String> {
        let path = match self.get("passfile") {
            Some(path) => PathBuf::from(path),
            None => home?.join(".pgpass"),
        };
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                    path.display()
                );
                return None;
            }
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let first = |list: Option<&str>| list.and_then(|l| l.split(',').next()).map(str::to_string);
        let host = first(self.get("host"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| default_host(self.get("port")));
        // A socket in the default folder counts as localhost, as in libpq.
        let host = if host.starts_with('/') && Some(host.as_str()) == default_socket_dir() {
            "localhost".to_string()
        } else {
            host
        };
        let port = first(self.get("port")).unwrap_or_else(|| "5432".into());
        let user = self
            .get("user")
            .map_or_else(|| os_user(env), str::to_string);
        let dbname = self
            .get("dbname")
            .map_or_else(|| user.clone(), str::to_string);
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let fields = pgpass_fields(line)?;
                let wanted = [&host, &port, &dbname, &user];
                fields[..4]
                    .iter()
                    .zip(wanted)
                    .all(|(field, value)| field == "*" || field == value)
                    .then(|| fields[4].clone())
            })
    }
}

/// `hostname:port:database:username:password`, with `\:` and `\\` escapes.
fn pgpass_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.trim_end_matches('\r').chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next()?),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

/// The user name libpq falls back on: the operating system's.
pub(crate) fn os_user(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("USER")
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "postgres".into())
}

/// Where this system's PostgreSQL puts its socket (Debian's libpq looks in
/// /var/run/postgresql, most others in /tmp), if either folder exists.
pub(crate) fn default_socket_dir() -> Option<&'static str> {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|dir| Path::new(dir).is_dir())
}

/// libpq's default host: the local socket when a server listens on it, else localhost.
pub(crate) fn default_host(port: Option<&str>) -> String {
    let port = port.and_then(|p| p.split(',').next()).unwrap_or("5432");
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|dir| Path::new(dir).join(format!(".s.PGSQL.{port}")).exists())
        .map_or_else(|| "localhost".to_string(), str::to_string)
}

/// The parameters of `service`, from the user's service file, else the system's.
fn service_params(
    service: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Vec<(String, String)>, ConninfoError> {
    let user_file = env("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".pg_service.conf")));
    let system_file = PathBuf::from(env("PGSYSCONFDIR").unwrap_or_else(|| {
        // Where Debian's libpq looks; elsewhere PGSYSCONFDIR says.
        "/etc/postgresql-common".into()
    }))
    .join("pg_service.conf");
    let files: Vec<PathBuf> = user_file.into_iter().chain([system_file]).collect();
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Some(params) = find_service(&text, service, path)? {
            return Ok(params);
        }
    }
    Err(ConninfoError::NoService {
        service: service.to_string(),
        looked: files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The `key=value` lines of `[service]` in a service file's text.
fn find_service(
    text: &str,
    service: &str,
    path: &Path,
) -> Result<Option<Vec<(String, String)>>, ConninfoError> {
    let mut current: Option<&str> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if found.is_some() {
                break;
            }
            current = Some(name);
            if name == service {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some(params) = found.as_mut().filter(|_| current == Some(service)) else {
            continue;
        };
        let error = |reason: &str| ConninfoError::ServiceFile {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.into(),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| error("expected key=value"))?;
        let key = key.trim();
        if key == "service" {
            return Err(error("nested service specifications are not supported"));
        }
        if !KEYWORDS.iter().any(|(k, _)| *k == key) {
            return Err(error(&format!("invalid connection option {key:?}")));
        }
        params.push((key.to_string(), value.trim().to_string()));
    }
    Ok(found)
}

/// The keyword/value pairs of a connection string, in order: a `postgres://` or
/// `postgresql://` URL, or libpq's `key=value` form (values may be single-quoted, with `\'`
/// and `\\` escapes).
///
/// # Errors
/// A string neither form can read.
pub(crate) fn parse(conninfo: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let trimmed = conninfo.trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = trimmed.strip_prefix(scheme) {
            return parse_url(rest);
        }
    }
    parse_keywords(trimmed)
}

fn parse_keywords(text: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConninfoError::Syntax(format!(
                "missing \"=\" after {key:?}"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(|| {
                        ConninfoError::Syntax(format!("unterminated quoted value of {key:?}"))
                    })?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(ConninfoError::Syntax(format!(
                            "unterminated quoted value of {key:?}"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `[user[:password]@][host[:port][,…]][/dbname][?key=value&…]`, percent-decoded.
fn parse_url(rest: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let decode = |s: &str| -> Result<String, ConninfoError> {
        percent_decode(s)
            .ok_or_else(|| ConninfoError::Syntax(format!("invalid percent-encoding in {s:?}")))
    };
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".into(), decode(user)?));
            }
            if let Some(password) = password {
                pairs.push(("password".into(), decode(password)?));
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for spec in hosts.split(',') {
            // [v6]:port, or name:port
            let (name, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (addr, after) = v6.split_once(']').ok_or_else(|| {
                    ConninfoError::Syntax(format!("unterminated IPv6 address in {spec:?}"))
                })?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                let (name, port) = spec.split_once(':').unwrap_or((spec, ""));
                (decode(name)?, port)
            };
            names.push(name);
            ports.push(port.to_string());
        }
        if names.iter().any(|n| !n.is_empty()) {
            pairs.push(("host".into(), names.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".into(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".into(), decode(dbname)?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ConninfoError::Syntax(format!("missing \"=\" in URL parameter {pair:?}"))
        })?;
        // libpq's URL spelling of the one renamed keyword.
        let key = match decode(key)?.as_str() {
            "ssl" if value == "true" => {
                pairs.push(("sslmode".into(), "require".into()));
                continue;
            }
            other => other.to_string(),
        };
        pairs.push((key, decode(value)?));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Option<String> {
    // Unlike a form, a URL's `+` is a plus sign.
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests;
