//! `apitap run` and `apitap check` around the data: config mistakes, previews, `.env`, and
//! Ctrl-C during a run.

use axum::Router;
use axum::routing::get;

use crate::common::*;
use crate::pipelines::{api, project, run_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_stop_the_run_before_anything_moves() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_config").await;
    let addr = serve(api()).await;
    let dir = project(
        addr,
        &schema,
        &[("users", "SELECT * FROM {{ use_source(\"users\") }}")],
    );
    let config = dir.path().join("pipelines.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("table_destination_name: users", "table_destination: users"),
    )
    .unwrap();
    let run = run_in(dir.path(), &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("sources[1]: unknown field `table_destination`, expected one of"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("at line 8 column 5"), "{}", run.stderr);

    std::fs::write(&config, text).unwrap();
    std::fs::write(
        dir.path().join("sql/users.sql"),
        "SELECT * FROM {{ use_source(\"userz\") }}",
    )
    .unwrap();
    let run = run_in(dir.path(), &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "module users: pipelines.yaml: no source is named \"userz\" (sources: posts, users, broken, malformed)"
        ) || run.stderr.contains("no source is named \"userz\" (sources: posts, users, broken, malformed)"),
        "{}",
        run.stderr
    );
    assert!(!table_exists(&db, &format!("{schema}.users")).await);

    // SQL that does not parse is caught before any source is fetched.
    std::fs::write(
        dir.path().join("sql/users.sql"),
        "SELECT id FROM {{ use_source(\"users\") }} WHER id > 1",
    )
    .unwrap();
    let run = run_in(dir.path(), &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("module users (")
            && run.stderr.contains("Expected: end of statement, found: id"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_previews_schemas_ddl_and_rows_without_writing() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_check").await;
    let addr = serve(api()).await;
    let dir = project(
        addr,
        &schema,
        &[(
            "typed",
            "{{ sink(name=\"pg\", table=\"typed\") }}\n{{ schedule(\"0 */5 * * * *\") }}\nSELECT id, \"userId\" AS user_id, \"publishedAt\" AS at FROM {{ use_source(\"posts\") }} WHERE id < 3",
        )],
    );
    let modules = dir.path().join("sql");
    let config = dir.path().join("pipelines.yaml");
    let run = apitap(
        &[
            "check",
            "-m",
            modules.to_str().unwrap(),
            "-y",
            config.to_str().unwrap(),
            "--preview",
            "5",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.stdout;
    assert!(out.contains("schedule 0 */5 * * * *"), "{out}");
    assert!(
        out.contains("  source posts: \"id\" bigint, \"userId\" bigint, \"title\" text, \"publishedAt\" timestamptz, \"price\" text"),
        "{out}"
    );
    assert!(
        out.contains("  output: \"id\" bigint, \"user_id\" bigint, \"at\" timestamptz\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  DDL: CREATE TABLE \"{schema}\".\"typed\" (\"id\" bigint, \"user_id\" bigint, \"at\" timestamptz)"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "  row: {\"id\":1,\"user_id\":1,\"at\":\"2024-03-01T10:00:00Z\"}\n  row: {\"id\":2,\"user_id\":1,\"at\":\"2024-03-02T10:00:00Z\"}\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  into {schema}.typed (created), append\n  column \"id\" bigint: the type of the SQL's output column\n"
        )),
        "{out}"
    );
    assert!(out.ends_with("ok: 1 module(s) checked\n"), "{out}");
    assert!(!table_exists(&db, &format!("{schema}.typed")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_env_fills_variables_the_environment_does_not_set() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_dotenv").await;
    let addr = serve(api()).await;
    let dir = project(addr, &schema, &[]);
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: users\n    url: http://${{API_HOST}}/users\n    table_destination_name: ${{TABLE}}\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sql/users.sql"),
        "{{ scheduler(\"@daily\") }}\nSELECT * FROM {{ use_source(\"users\") }}",
    )
    .unwrap();
    // TABLE comes from .env; API_HOST from the environment, which .env does not override.
    std::fs::write(
        dir.path().join(".env"),
        "API_HOST=127.0.0.1:1\nTABLE=from_dotenv\n",
    )
    .unwrap();
    let cwd = dir.path().to_path_buf();
    let host = addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        command(&["run", "-m", "sql", "-y", "pipelines.yaml"])
            .current_dir(cwd)
            .env("API_HOST", host)
            .env_remove("TABLE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("into {schema}.from_dotenv (created): 3 rows")),
        "{stderr}"
    );
    assert_eq!(count(&db, &format!("{schema}.from_dotenv")).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_rolls_every_running_module_back_and_exits_130() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_interrupt").await;
    // An endless, slow source: the modules are mid-COPY when the signal comes.
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            let rows = futures_util::stream::unfold(1u64, |i| async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let chunk: String = (i..i + 100)
                    .map(|id| format!("{{\"id\": {id}}}\n"))
                    .collect();
                Some((Ok::<_, std::io::Error>(chunk), i + 100))
            });
            axum::body::Body::from_stream(rows)
        }),
    );
    let addr = serve(slow).await;
    let dir = project(addr, &schema, &[]);
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: slow\n    url: http://{addr}/slow\n    sample: 10\n    batch_size: 100\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
        ),
    )
    .unwrap();
    for name in ["a", "b"] {
        std::fs::write(
            dir.path().join(format!("sql/{name}.sql")),
            format!(
                "{{{{ sink(table=\"{name}\") }}}} SELECT id FROM {{{{ use_source(\"slow\") }}}}"
            ),
        )
        .unwrap();
    }
    let modules = dir.path().join("sql");
    let config = dir.path().join("pipelines.yaml");
    let child = command(&[
        "run",
        "-m",
        modules.to_str().unwrap(),
        "-y",
        config.to_str().unwrap(),
        "--jobs",
        "2",
    ])
    .spawn()
    .unwrap();
    // Both modules' COPYs are running before the signal.
    let mut copying = 0;
    for _ in 0..500 {
        copying = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'apitap' AND query LIKE 'COPY \"' || $1 || '\"%'",
                &[&schema],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if copying == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(copying, 2, "both modules should be mid-COPY");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("apitap: interrupted; modules still running were rolled back"),
        "{stderr}"
    );
    assert!(!table_exists(&db, &format!("{schema}.a")).await);
    assert!(!table_exists(&db, &format!("{schema}.b")).await);
}
