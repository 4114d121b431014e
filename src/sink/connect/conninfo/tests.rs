use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn urls_as_libpq_reads_them() {
    assert_eq!(
        parse("postgresql://us%40er:p%3Ass+w@db1:5433,[::1]:5434,db3/my%20db?sslmode=verify-full&application_name=a+b").unwrap(),
        pairs(&[
            ("user", "us@er"),
            ("password", "p:ss+w"),
            ("host", "db1,::1,db3"),
            ("port", "5433,5434,"),
            ("dbname", "my db"),
            ("sslmode", "verify-full"),
            ("application_name", "a+b"),
        ])
    );
    assert_eq!(parse("postgres://").unwrap(), pairs(&[]));
    assert_eq!(
        parse("postgres:///app?host=/var/run/postgresql").unwrap(),
        pairs(&[("dbname", "app"), ("host", "/var/run/postgresql")])
    );
    assert_eq!(
        parse("postgres://h/d?ssl=true").unwrap(),
        pairs(&[("host", "h"), ("dbname", "d"), ("sslmode", "require")])
    );
}

#[test]
fn keyword_strings_with_quotes_and_escapes() {
    assert_eq!(
        parse("host=db  port = 5432 password='it''s' user='a b' options='-c search_path=x\\'y'")
            .unwrap_err(),
        ConninfoError::Syntax("missing \"=\" after \"'s'\"".into()),
        "a doubled quote is not an escape in libpq"
    );
    assert_eq!(
        parse("host=db  port = 5432 password='it\\'s' user='a b' dbname=x\\ y").unwrap(),
        pairs(&[
            ("host", "db"),
            ("port", "5432"),
            ("password", "it's"),
            ("user", "a b"),
            ("dbname", "x y"),
        ])
    );
    assert!(matches!(
        parse("host=db password='open"),
        Err(ConninfoError::Syntax(_))
    ));
}

#[test]
fn the_string_then_settings_then_service_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.conf");
    std::fs::write(
        &services,
        "# ours\n[other]\nhost=elsewhere\n\n[warehouse]\nhost=svc-host\nport=6000\ndbname=svc-db\napplication_name=svc-app\n",
    )
    .unwrap();
    let vars = env(&[
        ("PGSERVICEFILE", services.to_str().unwrap()),
        ("PGPORT", "7000"),
        ("PGUSER", "env-user"),
        ("PGAPPNAME", "env-app"),
        ("PGOPTIONS", "-c statement_timeout=5s"),
        ("PGCONNECT_TIMEOUT", "7"),
        ("PGSSLMODE", "require"),
    ]);
    let params = Params::resolve(
        Some("service=warehouse dbname=explicit"),
        &pairs(&[("application_name", "yaml-app"), ("dbname", "yaml-db")]),
        &vars,
        None,
    )
    .unwrap();
    assert_eq!(params.get("host"), Some("svc-host"));
    assert_eq!(params.get("port"), Some("6000"));
    assert_eq!(params.get("dbname"), Some("explicit"));
    assert_eq!(params.get("application_name"), Some("yaml-app"));
    assert_eq!(params.get("user"), Some("env-user"));
    assert_eq!(params.get("options"), Some("-c statement_timeout=5s"));
    assert_eq!(params.get("connect_timeout"), Some("7"));
    assert_eq!(params.get("sslmode"), Some("require"));

    let missing = Params::resolve(Some("service=nope"), &[], &vars, None).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("definition of service \"nope\" not found (looked in "),
        "{missing}"
    );
    assert_eq!(
        Params::resolve(Some("hots=db"), &[], &vars, None).unwrap_err(),
        ConninfoError::UnknownKeyword("hots".into())
    );
}

#[cfg(unix)]
#[test]
fn the_password_file_as_libpq_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".pgpass");
    std::fs::write(
        &file,
        "# comment\nother:5432:*:*:wrong\ndb\\:1:5432:app:loader:first\ndb2:*:*:loader:p\\:w\\\\d\n*:*:*:*:fallback\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = Some(dir.path());
    let lookup = |conninfo: &str| {
        Params::resolve(Some(conninfo), &[], &env(&[]), home)
            .unwrap()
            .get("password")
            .map(str::to_string)
    };
    assert_eq!(
        lookup("host=db:1 dbname=app user=loader").as_deref(),
        Some("first")
    );
    assert_eq!(
        lookup("host=db2 port=9 user=loader").as_deref(),
        Some("p:w\\d")
    );
    assert_eq!(lookup("host=db3 user=x").as_deref(), Some("fallback"));
    assert_eq!(
        lookup("host=db2 user=loader password=given").as_deref(),
        Some("given"),
        "a given password wins"
    );
    // Readable by others: ignored, as libpq does.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(lookup("host=db3 user=x"), None);
    // PGPASSFILE (or passfile=) names another file.
    let other = dir.path().join("elsewhere");
    std::fs::write(&other, "*:*:*:*:from-passfile\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let params = Params::resolve(
        Some("host=h"),
        &[],
        &env(&[("PGPASSFILE", other.to_str().unwrap())]),
        home,
    )
    .unwrap();
    assert_eq!(params.get("password"), Some("from-passfile"));
    assert!(!format!("{params:?}").contains("from-passfile"));
}
