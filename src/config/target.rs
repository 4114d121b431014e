//! One entry of `targets:`: a PostgreSQL server, given by keys, a URL or a variable holding
//! one, read as libpq reads connection settings (see [`crate::sink::connect::conninfo`]).

use serde::Deserialize;

use super::ConfigError;
use crate::base::expand::expand;
use crate::schema::TableName;
use crate::sink::ConnectOptions;

/// `type:` of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetKind {
    Postgres,
}

/// `auth:` of a target: literal credentials, or the variables holding them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
}

/// One entry of `targets:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetConfig {
    pub name: String,
    /// `type: postgres`, the one kind there is: checked as the file is read.
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: TargetKind,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    #[serde(default)]
    pub auth: TargetAuth,
    /// Schema of unqualified destination tables (default: the server's search_path).
    pub schema: Option<String>,
    pub sslmode: Option<String>,
    /// A full connection URL (or `key=value` string), or the variable holding one; its own
    /// parameters win over the keys above.
    pub url: Option<String>,
    pub url_env: Option<String>,
    /// Any other libpq connection parameter: `{sslrootcert: certs/ca.pem, application_name: nightly}`.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

impl TargetConfig {
    /// Connection settings, with `${VAR}` and the `*_env` keys taken from `env`.
    ///
    /// # Errors
    /// An unset variable, or settings tokio-postgres cannot use.
    pub(crate) fn connect_options(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectOptions, ConfigError> {
        let what = format!("target {:?}", self.name);
        let err = |reason: String| ConfigError::Resolve {
            what: what.clone(),
            reason,
        };
        let sub = |value: &Option<String>, key: &str| -> Result<Option<String>, ConfigError> {
            value
                .as_deref()
                .map(|v| expand(v, env, key).map_err(|e| err(e.to_string())))
                .transpose()
        };
        let from_env = |var: &Option<String>, key: &str| -> Result<Option<String>, ConfigError> {
            var.as_deref()
                .map(|name| {
                    env(name).ok_or_else(|| {
                        err(format!("environment variable {name} (in {key}) is not set"))
                    })
                })
                .transpose()
        };
        let url = match sub(&self.url, "url")? {
            Some(url) => Some(url),
            None => from_env(&self.url_env, "url_env")?,
        };
        // The target's own keys sit below a url's parameters and above the service, the
        // PG* variables and .pgpass, which fill in what neither says.
        let mut settings: Vec<(String, String)> = Vec::new();
        let mut set = |keyword: &str, value: Option<String>| {
            if let Some(value) = value {
                settings.push((keyword.to_string(), value));
            }
        };
        set("host", sub(&self.host, "host")?);
        set("port", self.port.map(|p| p.to_string()));
        set("dbname", sub(&self.database, "database")?);
        set(
            "user",
            match sub(&self.auth.username, "auth.username")? {
                Some(u) => Some(u),
                None => from_env(&self.auth.username_env, "auth.username_env")?,
            },
        );
        set(
            "password",
            match sub(&self.auth.password, "auth.password")? {
                Some(p) => Some(p),
                None => from_env(&self.auth.password_env, "auth.password_env")?,
            },
        );
        set("sslmode", sub(&self.sslmode, "sslmode")?);
        for (keyword, value) in &self.params {
            set(keyword, sub(&Some(value.clone()), "params")?);
        }
        // DATABASE_URL is `apitap load`'s; a target names its own (url_env: DATABASE_URL).
        let options =
            ConnectOptions::resolve(Some(url.as_deref().unwrap_or("")), &settings, &|key| {
                if key == "DATABASE_URL" {
                    None
                } else {
                    env(key)
                }
            });
        options.map_err(|e| err(e.to_string()))
    }

    /// Where a destination table written without a schema goes.
    pub(crate) fn table(&self, text: &str) -> Result<TableName, ConfigError> {
        let mut table = TableName::parse(text).map_err(ConfigError::TableName)?;
        if table.schema.is_none() {
            table.schema = self.schema.clone();
        }
        Ok(table)
    }
}
