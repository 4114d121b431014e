//! The password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), read as libpq reads it: lines
//! `host:port:database:user:password`, `*` matching anything in the first four fields, `\`
//! escaping `:` and `\`, the password ending at the next unescaped `:`. Each host of a list
//! is looked up on its own, by its name, else its `hostaddr`; no host, or the default socket
//! folder, is `localhost`. A file others may read is ignored, with libpq's warning.

use std::path::Path;

/// What a password is looked up by.
pub(crate) struct Lookup<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// The password `file` holds for `lookup`, if the file may be read and has one.
pub(crate) fn password_from_file(file: &Path, lookup: &Lookup<'_>) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        tracing::warn!("password file \"{}\" is not a plain file", file.display());
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let port = lookup.port.to_string();
    let wanted = [lookup.host, port.as_str(), lookup.dbname, lookup.user];
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let mut rest = line;
            for value in wanted {
                rest = field_matches(rest, value)?;
            }
            Some(password(rest))
        })
}

/// The rest of the line after its next field, if that field is `*` or `value`.
fn field_matches<'a>(line: &'a str, value: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut wanted = value.chars();
    let mut chars = line.char_indices();
    while let Some((at, c)) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => escaped,
                None => return None,
            },
            ':' => return wanted.next().is_none().then(|| &line[at + 1..]),
            c => c,
        };
        if wanted.next() != Some(c) {
            return None;
        }
    }
    None
}

/// The password field: up to the next unescaped `:`, escapes removed.
fn password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_as_libpq_matches_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:*:wrong\ndb\\:1:5432:app:loader:first\n\
             db2:*:*:loader:p\\:w\\\\d:ignored\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let find = |host, port, dbname, user| {
            let lookup = Lookup {
                host,
                port,
                dbname,
                user,
            };
            password_from_file(&file, &lookup)
        };
        assert_eq!(
            find("db:1", 5432, "app", "loader").as_deref(),
            Some("first")
        );
        assert_eq!(
            find("db2", 9, "loader", "loader").as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(find("db3", 5432, "x", "x").as_deref(), Some("fallback"));
        assert_eq!(
            find("db", 5432, "app", "loader").as_deref(),
            Some("fallback")
        );
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find("db3", 5432, "x", "x"), None);
    }
}
