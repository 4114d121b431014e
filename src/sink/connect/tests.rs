use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn resolve(url: Option<&str>, vars: &[(&str, &str)]) -> Result<ConnectOptions, ConnectError> {
    ConnectOptions::resolve(url, &[], &env(vars))
}

#[test]
fn the_url_beats_the_environment_which_fills_in_the_rest() {
    let o = resolve(
        Some("postgres://u:secret@db:6543/app?connect_timeout=5"),
        &[
            ("PGHOST", "other"),
            ("PGAPPNAME", "nightly"),
            ("PGOPTIONS", "-c work_mem=64MB"),
        ],
    )
    .unwrap();
    assert_eq!(o.describe(), "u@db:6543/app");
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(5)));
    assert_eq!(o.config.get_application_name(), Some("nightly"));
    assert_eq!(o.config.get_options(), Some("-c work_mem=64MB"));
    assert!(!format!("{o:?}").contains("secret"));
}

#[test]
fn pg_variables_alone() {
    let o = resolve(
        None,
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", "5433"),
            ("PGUSER", "me"),
            ("PGSSLMODE", "require"),
            ("PGPASSWORD", "pw"),
        ],
    )
    .unwrap();
    assert_eq!(o.describe(), "me@127.0.0.1:5433/me");
    assert_eq!(o.hosts[0].password.as_deref(), Some("pw"));
    assert_eq!(o.tls.mode, tls::SslMode::Require);
    assert_eq!(o.config.get_application_name(), Some("apitap"));
    assert_eq!(o.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
}

#[test]
fn timeouts_as_libpq_reads_them() {
    let timeout = |t: &str| {
        resolve(Some(&format!("host=h connect_timeout={t}")), &[]).map(|o| o.connect_timeout)
    };
    assert_eq!(timeout("0").unwrap(), None, "0 waits forever");
    assert_eq!(
        timeout("1").unwrap(),
        Some(Duration::from_secs(2)),
        "at least 2 s"
    );
    assert_eq!(
        timeout("soon").unwrap_err().to_string(),
        "invalid connect_timeout value: \"soon\" (a whole number of seconds)"
    );
}

#[test]
fn settings_libpq_has_and_apitap_cannot_honor_are_refused_by_name() {
    assert_eq!(
        resolve(Some("host=h sslmode=bogus"), &[])
            .unwrap_err()
            .to_string(),
        "invalid sslmode value: \"bogus\" (use disable, allow, prefer, require, verify-ca or verify-full)"
    );
    assert_eq!(
        resolve(Some("host=h sslpassword=x"), &[])
            .unwrap_err()
            .to_string(),
        "sslpassword=x is not supported: decrypt the key first (openssl pkey -in KEY -out PLAIN_KEY)"
    );
    assert_eq!(
        resolve(Some("host=h hots=x"), &[]).unwrap_err().to_string(),
        "invalid connection option \"hots\""
    );
    assert_eq!(
        resolve(Some("host=h sslmode=require sslrootcert=system"), &[])
            .unwrap_err()
            .to_string(),
        "weak sslmode \"require\" may not be used with sslrootcert=system (use \"verify-full\")"
    );
    let missing = resolve(
        Some("host=h sslmode=verify-ca sslrootcert=/nonexistent/root.crt"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with("root certificate file \"/nonexistent/root.crt\" does not exist"),
        "{missing}"
    );
}

#[cfg(unix)]
#[test]
fn each_host_has_its_own_line_of_the_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".pgpass");
    std::fs::write(
        &file,
        "a:5432:*:u:for-a\nb:6000:*:u:for-b\n10.0.0.9:*:*:*:by-address\nlocalhost:*:*:*:local\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = dir.path().to_str().unwrap();
    let passwords = |conninfo: &str| {
        let o = resolve(Some(conninfo), &[("HOME", home)]).unwrap();
        o.hosts
            .iter()
            .map(|h| h.password.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        passwords("host=a,b port=5432,6000 user=u"),
        ["for-a", "for-b"]
    );
    assert_eq!(passwords("hostaddr=10.0.0.9 user=u"), ["by-address"]);
    assert_eq!(passwords("host=,a user=u"), ["local", "for-a"]);
    assert_eq!(
        passwords("host=a,b user=u password=given"),
        ["given", "given"]
    );
    assert_eq!(
        resolve(Some("host=a,b port=1,2,3"), &[])
            .unwrap_err()
            .to_string(),
        "could not match 3 port numbers to 2 hosts"
    );
    assert_eq!(
        resolve(Some("host=a,b hostaddr=10.0.0.1"), &[])
            .unwrap_err()
            .to_string(),
        "could not match 2 host names to 1 hostaddr values"
    );
}
