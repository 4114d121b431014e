//! The bottom layer: what every stage may use and that uses none of them.
//!
//! - [`setting`]: how a setting is named (`--header` or `headers`) and the error for one that
//!   cannot work;
//! - [`options`]: the choices a user makes by name (`--mode merge`, `on_error: reject`), one
//!   enum each for flags and YAML alike;
//! - [`expand`]: `${VAR}` and the date helpers;
//! - [`secrets`]: the registry of secrets and the one redaction every output goes through;
//! - [`message`]: error chains, snippets of input, and the line printed on stderr;
//! - [`tls`]: the process's one rustls crypto provider, for HTTPS sources and PostgreSQL alike.
//!
//! Nothing here imports from another module of the crate but [`crate::base`] itself; a test
//! (`tests/it/layers.rs`) keeps the crate's modules free of import circles.

pub(crate) mod expand;
pub(crate) mod message;
pub(crate) mod options;
pub(crate) mod secrets;
pub(crate) mod setting;
pub(crate) mod tls;

pub use message::say;
pub(crate) use message::{error_chain, snippet};
pub(crate) use setting::{Origin, Setting, SettingError};
