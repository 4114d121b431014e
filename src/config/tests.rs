//! Unit tests of `config`.

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("pipelines.yaml")).map_err(|e| e.to_string())
}

#[test]
fn reads_the_original_example() {
    let config = parse(include_str!("../../tests/data/original-pipelines.yaml")).unwrap();
    assert_eq!(config.sources.len(), 2);
    let source = &config.sources[0];
    assert_eq!(source.name, "github_repos");
    assert_eq!(source.primary_key_in_dest, Some(Keys::One("id".into())));
    assert_eq!(source.mode(), Mode::Merge);
    assert_eq!(source.headers[1].key, "User-Agent");
    assert_eq!(source.retry.as_ref().unwrap().max_attempts, 3);
    let target = config.target(Some("postgres_sink")).unwrap();
    assert_eq!(target.database.as_deref(), Some("apitap"));
}

#[test]
fn the_documented_config_and_the_examples_parse() {
    let page = include_str!("../../docs/pipelines.md");
    let section = &page[page.find("## The config").unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let config = parse(yaml).unwrap();
    assert_eq!(config.sources[0].column_types().unwrap().len(), 2);
    assert_eq!(config.sources[0].decode_threads, Some(2));
    assert_eq!(
        (config.sources[0].nested, config.sources[0].max_nesting),
        (crate::base::options::Nested::Flatten, Some(3))
    );

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = Config::load(&dir.join("config/pipelines.yaml")).unwrap();
    let modules = module::discover(&dir.join("sql")).unwrap();
    assert_eq!(modules.len(), 3);
    for path in modules {
        let module = module::render(&dir.join("sql"), &path).unwrap();
        for source in &module.sources {
            config.source(source).unwrap();
        }
        config.target(module.sink.name.as_deref()).unwrap();
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = parse(
        "sources:\n  - name: a\n    url: http://x\n    paginaton: {kind: cursor}\ntargets: []\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("pipelines.yaml: sources[0]: unknown field `paginaton`, expected one of"),
        "{err}"
    );
    assert!(err.contains("at line 4 column 5"), "{err}");
}

#[test]
fn replace_settings_reach_the_load() {
    let config = parse(
        "sources:\n  - name: a\n    url: http://x\n    mode: replace\n    replace_with: delete\n    allow_empty: true\n",
    )
    .unwrap();
    let table = TableName::parse("t").unwrap();
    let source = &config.sources[0];
    let load = source
        .resolve(source.to_spec(table).unwrap(), &|_| None)
        .unwrap();
    assert_eq!(
        (
            load.write.mode,
            load.write.replace_with,
            load.write.allow_empty
        ),
        (Mode::Replace, ReplaceWith::Delete, true)
    );
    let err =
        parse("sources:\n  - name: a\n    url: http://x\n    replace_with: drop\n").unwrap_err();
    assert!(
        err.contains("replace_with: unknown variant `drop`, expected `swap` or `delete`"),
        "{err}"
    );
}

#[test]
fn a_missing_key_is_named() {
    let err = parse("sources:\n  - name: a\n").unwrap_err();
    assert!(
        err.starts_with("pipelines.yaml: sources[0]: missing field `url` at line 2"),
        "{err}"
    );
}

#[test]
fn names_used_twice_are_refused_with_the_line() {
    let err = parse("sources:\n  - name: a\n    url: x\n  - name: a\n    url: y\n").unwrap_err();
    assert_eq!(err, "pipelines.yaml, line 4: two sources are named \"a\"");
}

#[test]
fn target_credentials_come_from_the_named_variables() {
    let config = parse(
        "targets:\n  - name: pg\n    type: postgres\n    host: db.internal\n    port: 6543\n    database: ${DB}\n    auth: {username_env: U, password_env: P}\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "DB" => Some("warehouse".to_string()),
        "U" => Some("loader".to_string()),
        "P" => Some("secret".to_string()),
        _ => None,
    };
    let options = config.target(None).unwrap().connect_options(&env).unwrap();
    let described = format!("{options:?}");
    assert!(described.contains("db.internal:6543"), "{described}");
    assert!(described.contains("warehouse"), "{described}");
    assert!(!described.contains("secret"), "{described}");
    let missing = config
        .target(None)
        .unwrap()
        .connect_options(&|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing,
        "target \"pg\": environment variable DB (in database) is not set"
    );
}

#[test]
fn keys_and_column_types_parse() {
    assert_eq!(Keys::One("a, b".into()).columns(), vec!["a", "b"]);
    assert_eq!(parse_pg_type("BIGINT"), Ok(PgType::Int8));
    assert_eq!(
        parse_pg_type("timestamp with time zone"),
        Ok(PgType::Timestamptz)
    );
    assert!(
        parse_pg_type("money")
            .unwrap_err()
            .to_string()
            .starts_with("unknown column type \"money\"")
    );
}

#[test]
fn yaml_rate_limits_and_retries_are_checked_like_the_flags() {
    let config = parse(
        "sources:\n  - name: a\n    url: http://x\n    rate_limit: {requests_per_second: 0}\n  - name: b\n    url: http://x\n    retry: {max_attempts: 0}\n",
    )
    .unwrap();
    let table = TableName::parse("t").unwrap();
    let err = |i: usize| {
        let source = &config.sources[i];
        source
            .resolve(source.to_spec(table.clone()).unwrap(), &|_| None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(0),
        "source \"a\": rate_limit: need requests_per_second > 0 and burst >= 1"
    );
    assert_eq!(
        err(1),
        "source \"b\": retry: need max_attempts >= 1 and 0 <= min_delay_secs <= max_delay_secs <= 3600"
    );
}
