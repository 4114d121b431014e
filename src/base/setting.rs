//! How settings are named and how one that cannot work is reported.
//!
//! A load is described as flags or as a YAML source, and every message about a setting names
//! it the way the user wrote it: `--header` on the command line, `headers` in YAML. Each
//! stage checks its own settings with this vocabulary, so the stages share it from here.

/// Where a load was described, which decides how settings are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `apitap load` flags: `--header`, `--retry`, …
    Flags,
    /// A source of the YAML config: `headers`, `retry`, …
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    Yaml,
}

/// A setting that can be wrong, named as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    Url,
    Header,
    Query,
    Body,
    Auth,
    Retry,
    RateLimit,
    RecordsPath,
    ConnectTimeout,
    ReadTimeout,
    CommitEvery,
    CopyStreams,
    Timeout,
    CaCert,
    MaxPageBytes,
    LockTimeout,
    MaxNesting,
}

impl Setting {
    /// The flag or YAML key.
    pub(crate) fn name(self, origin: Origin) -> &'static str {
        let (flag, key) = match self {
            Setting::Url => ("the source URL", "url"),
            Setting::Header => ("--header", "headers"),
            Setting::Query => ("--query", "query_params"),
            Setting::Body => ("--body", "body"),
            Setting::Auth => ("--auth", "auth"),
            Setting::Retry => ("--retry", "retry"),
            Setting::RateLimit => ("--rate-limit", "rate_limit"),
            Setting::RecordsPath => ("--records-path", "data_path"),
            Setting::ConnectTimeout => ("--connect-timeout", "connect_timeout_secs"),
            Setting::ReadTimeout => ("--read-timeout", "read_timeout_secs"),
            Setting::CommitEvery => ("--commit-every", "commit_every"),
            Setting::CopyStreams => ("--copy-streams", "copy_streams"),
            Setting::Timeout => ("--timeout", "timeout_secs"),
            Setting::CaCert => ("--ca-cert", "ca_cert"),
            Setting::MaxPageBytes => ("--max-page-bytes", "max_page_bytes"),
            Setting::LockTimeout => ("--lock-timeout", "lock_timeout_secs"),
            Setting::MaxNesting => ("--max-nesting", "max_nesting"),
        };
        match origin {
            Origin::Flags => flag,
            Origin::Yaml => key,
        }
    }
}

/// A setting of a load that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SettingError {
    /// `${VAR}` names a variable that is not set.
    #[error("environment variable {var} (in {setting}) is not set")]
    UnsetVariable { var: String, setting: String },
    /// A value that cannot work, and why.
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
    /// Settings that cannot go together, or one that needs another.
    #[error("{0}")]
    Conflict(String),
}

impl SettingError {
    pub(crate) fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> SettingError {
        SettingError::Invalid {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}
