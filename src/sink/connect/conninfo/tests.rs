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
        ConninfoError::Syntax("missing \"=\" after \"'s'\" in connection info string".into()),
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

#[test]
fn uris_libpq_refuses_are_refused_in_its_words() {
    let refused = |uri: &str| match parse(uri) {
        Err(ConninfoError::Syntax(message)) => message,
        other => panic!("{uri}: {other:?}"),
    };
    assert_eq!(
        refused("postgres://[]"),
        "IPv6 host address may not be empty in URI: \"postgres://[]\""
    );
    assert_eq!(
        refused("postgres://[::1]z"),
        "unexpected character 'z' at position 17 in URI (expected \":\" or \"/\"): \"postgres://[::1]z\""
    );
    assert_eq!(
        refused("postgres://h?dbname=%XXfoo"),
        "invalid percent-encoded token: \"%XXfoo\""
    );
    assert_eq!(
        refused("postgresql://a%00b"),
        "forbidden value %00 in percent-encoded value: \"a%00b\""
    );
    assert_eq!(
        refused("postgresql://h?key=key=value"),
        "extra key/value separator \"=\" in URI query parameter: \"key\""
    );
    assert_eq!(
        refused("postgresql://h?a=1&&b=2"),
        "missing key/value separator \"=\" in URI query parameter: \"\""
    );
    // Credentials end at the first '@': the rest is a host name no server has.
    assert_eq!(
        parse("postgresql://u:p@ss@h/db").unwrap(),
        pairs(&[
            ("user", "u"),
            ("password", "p"),
            ("host", "ss@h"),
            ("dbname", "db")
        ])
    );
    // An empty port list is no port, so PGPORT applies.
    assert_eq!(parse("postgres://h:/").unwrap(), pairs(&[("host", "h")]));
    assert_eq!(
        parse("postgres://h1:5433,h2").unwrap(),
        pairs(&[("host", "h1,h2"), ("port", "5433,")])
    );
}

#[test]
fn an_empty_value_hides_what_comes_after_it_and_means_the_default() {
    let vars = env(&[("PGUSER", "env-user"), ("PGHOST", "env-host")]);
    let params = Params::resolve(Some("user='' host="), &[], &vars, None).unwrap();
    assert_eq!(params.get("user"), None);
    assert_eq!(params.get("host"), None);
    let params = Params::resolve(None, &[], &env(&[("PGUSER", "")]), None).unwrap();
    assert_eq!(params.get("user"), None);
}
