//! The hosts a connection may reach, worked out as libpq works them out: one per entry of
//! `hostaddr` (when given) or `host`, the two lists of equal length; an entry with neither is
//! the local socket. `port` gives one port for all, or one per host (an empty one is 5432).
//! A host without a password given is looked up in the password file by its own name, port,
//! database and user.

use std::net::IpAddr;
use std::path::PathBuf;

use super::ConnectError;
use super::conninfo::pgpass::{Lookup, password_from_file};
use super::conninfo::{Params, default_socket_dir};

/// Where one host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// A server's socket folder (`host=/var/run/postgresql`).
    Socket(PathBuf),
    /// A host name, looked up; every address it has is tried.
    Name(String),
    /// `hostaddr`: this address, with `name` (if any) for TLS and the password file.
    Ip { ip: IpAddr, name: Option<String> },
}

/// One host of the list.
#[derive(Clone)]
pub(crate) struct Host {
    pub address: Address,
    pub port: u16,
    pub password: Option<String>,
    /// The password file it came from, said when the server refuses it, as libpq does.
    pub password_file: Option<PathBuf>,
}

impl Host {
    /// `host:port`, or `folder:port`, as messages name it.
    pub(crate) fn describe(&self) -> String {
        match &self.address {
            Address::Socket(dir) => format!("{}:{}", dir.display(), self.port),
            Address::Name(name)
            | Address::Ip {
                name: Some(name), ..
            } => {
                format!("{name}:{}", self.port)
            }
            Address::Ip { ip, name: None } => format!("{ip}:{}", self.port),
        }
    }

    /// The name TLS checks the certificate against.
    pub(crate) fn tls_name(&self) -> String {
        match &self.address {
            Address::Socket(_) => String::new(),
            Address::Name(name)
            | Address::Ip {
                name: Some(name), ..
            } => name.clone(),
            Address::Ip { ip, name: None } => ip.to_string(),
        }
    }
}

/// The list `params` describes, for `user` on `dbname`; passwords from the file at
/// `password_file` when not given.
///
/// # Errors
/// Lists of different lengths, an address or port that is not one.
pub(crate) fn hosts(
    params: &Params,
    dbname: &str,
    user: &str,
    password_file: Option<PathBuf>,
) -> Result<Vec<Host>, ConnectError> {
    let split = |keyword| {
        params
            .get(keyword)
            .map(|v| v.split(',').collect::<Vec<_>>())
    };
    let (names, addrs) = (split("host"), split("hostaddr"));
    let count = addrs.as_ref().or(names.as_ref()).map_or(1, Vec::len);
    if let (Some(names), Some(addrs)) = (&names, &addrs) {
        if names.len() != addrs.len() {
            return Err(ConnectError::Mismatch(format!(
                "could not match {} host names to {} hostaddr values",
                names.len(),
                addrs.len()
            )));
        }
    }
    let ports = ports(params.get("port"), count)?;
    let mut hosts = Vec::with_capacity(count);
    for (i, port) in ports.into_iter().enumerate() {
        let name = names.as_ref().map_or("", |n| n[i]);
        let addr = addrs.as_ref().map_or("", |a| a[i]);
        let address = if !addr.is_empty() {
            let ip = addr.parse().map_err(|_| ConnectError::Invalid {
                keyword: "hostaddr",
                value: addr.to_string(),
                expected: "a numeric IP address",
            })?;
            let name = (!name.is_empty()).then(|| name.to_string());
            Address::Ip { ip, name }
        } else if name.starts_with('/') {
            Address::Socket(PathBuf::from(name))
        } else if !name.is_empty() {
            Address::Name(name.to_string())
        } else {
            Address::Socket(PathBuf::from(default_socket_dir(port)))
        };
        let given = params.get("password").map(str::to_string);
        let lookup = || {
            let file = password_file.as_deref()?;
            let host = match &address {
                Address::Socket(dir) if dir.as_os_str() != default_socket_dir(port) => {
                    dir.to_str().unwrap_or_default().to_string()
                }
                Address::Socket(_) => "localhost".into(),
                _ if !name.is_empty() => name.to_string(),
                _ => addr.to_string(),
            };
            let lookup = Lookup {
                host: &host,
                port,
                dbname,
                user,
            };
            password_from_file(file, &lookup)
        };
        let (password, from_file) = match given {
            Some(password) => (Some(password), None),
            None => match lookup() {
                Some(password) => (Some(password), password_file.clone()),
                None => (None, None),
            },
        };
        hosts.push(Host {
            address,
            port,
            password,
            password_file: from_file,
        });
    }
    Ok(hosts)
}

/// One port per host: the one given for all, or each host's (5432 where empty).
fn ports(given: Option<&str>, hosts: usize) -> Result<Vec<u16>, ConnectError> {
    let Some(given) = given else {
        return Ok(vec![5432; hosts]);
    };
    let list: Vec<&str> = given.split(',').collect();
    let list = match list.len() {
        1 => vec![list[0]; hosts],
        n if n == hosts => list,
        n => {
            return Err(ConnectError::Mismatch(format!(
                "could not match {n} port numbers to {hosts} hosts"
            )));
        }
    };
    list.into_iter()
        .map(|port| match port.trim() {
            "" => Ok(5432),
            p => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ConnectError::Invalid {
                    keyword: "port",
                    value: port.to_string(),
                    expected: "a port number",
                }),
        })
        .collect()
}
