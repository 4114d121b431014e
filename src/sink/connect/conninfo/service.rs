//! Service files, read as libpq reads them: the user's file (`PGSERVICEFILE`, else
//! `~/.pg_service.conf`) first, then `pg_service.conf` in `PGSYSCONFDIR`. A section starts at
//! a line beginning `[name]` (anything after the `]` is ignored); within the wanted section
//! every line is `keyword=value`, taken exactly (no blanks around the `=`), and the section
//! ends at the next one. Lines of other sections are not read.

use std::path::{Path, PathBuf};

use super::{ConninfoError, is_keyword};

/// The parameters of `service`, from the user's service file, else the system's.
///
/// # Errors
/// A line of the service that is not `keyword=value` with a known keyword; a service that
/// neither file defines.
pub(super) fn service_params(
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

/// The `keyword=value` lines of `[service]` in a service file's text.
fn find_service(
    text: &str,
    service: &str,
    path: &Path,
) -> Result<Option<Vec<(String, String)>>, ConninfoError> {
    let mut found: Option<Vec<(String, String)>> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            let name = header
                .strip_prefix(service)
                .filter(|rest| rest.starts_with(']'));
            if name.is_some() {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some(params) = found.as_mut() else {
            continue;
        };
        let error = |reason: &str| ConninfoError::ServiceFile {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.into(),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| error("syntax error: expected keyword=value"))?;
        if key == "service" {
            return Err(error("nested service specifications are not supported"));
        }
        if !is_keyword(key) {
            return Err(error(&format!(
                "syntax error: {key:?} is not a connection option (write keyword=value, without blanks around the \"=\")"
            )));
        }
        params.push((key.to_string(), value.to_string()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_as_libpq_reads_them() {
        let path = Path::new("svc.conf");
        let text =
            "# ours\n[other]\nnonsense\n[prod] # main\n  host=h\nuser= spaced\n[next]\nnonsense\n";
        assert_eq!(
            find_service(text, "prod", path).unwrap(),
            Some(vec![
                ("host".to_string(), "h".to_string()),
                ("user".to_string(), " spaced".to_string()),
            ])
        );
        assert_eq!(find_service(text, "pro", path).unwrap(), None);
        let spaced = find_service("[s]\nhost = h\n", "s", path).unwrap_err();
        assert_eq!(
            spaced.to_string(),
            "service file svc.conf, line 2: syntax error: \"host \" is not a connection option (write keyword=value, without blanks around the \"=\")"
        );
        assert!(find_service("[s]\nservice=t\n", "s", path).is_err());
    }
}
