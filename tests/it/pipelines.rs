//! `apitap run` and `apitap check`: the original ApiTap's config and SQL modules, transformed
//! by DataFusion, into the real PostgreSQL, from HTTP servers on 127.0.0.1.

use std::path::Path;

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Posts with camelCase fields, timestamps and decimals in text; users to join them with.
pub fn api() -> Router {
    let posts = (1..=6)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"userId\":{},\"title\":\"post {i}\",\"publishedAt\":\"2024-03-0{i}T10:00:00Z\",\"price\":\"{i}.25\"}}\n",
                (i + 1) / 2
            )
        })
        .collect::<String>();
    let users = r#"[{"id":1,"name":"ann"},{"id":2,"name":"bob"},{"id":3,"name":"cy"}]"#;
    Router::new()
        .route("/posts", get(move || async move { posts }))
        .route("/users", get(move || async move { users }))
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database on fire") }),
        )
        .route(
            "/mixed",
            get(|| async { "{\"id\":1}\n{\"id\":\"two\"}\n{\"id\":2}\n{\"id\":3}\n" }),
        )
        .route(
            "/malformed",
            get(|| async { "{\"id\":1,\"userId\":1}\n{\"id\":2,\"userId\":\n" }),
        )
}

/// Writes the config and modules into a fresh folder; returns (folder, config path).
pub fn project(
    addr: std::net::SocketAddr,
    schema: &str,
    modules: &[(&str, &str)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
sources:
  - name: posts
    url: http://{addr}/posts
    table_destination_name: posts
  - name: users
    url: http://{addr}/users
    table_destination_name: users
  - name: broken
    url: http://{addr}/broken
    retry: {{max_attempts: 1}}
    table_destination_name: broken
  - name: malformed
    url: http://{addr}/malformed
    table_destination_name: malformed
targets:
  - name: pg
    type: postgres
    url_env: DATABASE_URL
    schema: {schema}
"#
    );
    std::fs::write(dir.path().join("pipelines.yaml"), config).unwrap();
    std::fs::create_dir(dir.path().join("sql")).unwrap();
    for (name, sql) in modules {
        std::fs::write(dir.path().join("sql").join(format!("{name}.sql")), sql).unwrap();
    }
    dir
}

pub async fn run_in(dir: &Path, extra: &[&str]) -> Run {
    let modules = dir.join("sql");
    let config = dir.join("pipelines.yaml");
    let mut args = vec![
        "run",
        "-m",
        modules.to_str().unwrap(),
        "-y",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    apitap(&args, None).await
}

async fn texts(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_casts_case_renames_and_types_land_typed() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_types").await;
    let addr = serve(api()).await;
    let dir = project(
        addr,
        &schema,
        &[(
            "typed",
            r#"{{ sink(name="pg", table="typed") }}
SELECT
    id AS posts_id,
    "userId" AS user_id,
    upper(title) AS title,
    CAST("publishedAt" AS TIMESTAMP) AS published_local,
    "publishedAt" AS published_at,
    CAST("publishedAt" AS DATE) AS day,
    CAST(price AS DECIMAL(10, 2)) AS price,
    CAST(id AS SMALLINT) AS small,
    CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' END AS parity,
    CURRENT_TIMESTAMP AS loaded_at
FROM {{ use_source("posts") }}
WHERE "userId" > 1;
"#,
        )],
    );
    let run = run_in(dir.path(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: module typed: loaded posts into {schema}.typed (created): 4 rows"
        )),
        "{}",
        run.stderr
    );
    let types = texts(
        &db,
        &format!(
            "SELECT column_name || ' ' || data_type FROM information_schema.columns
             WHERE table_schema = '{schema}' AND table_name = 'typed' ORDER BY ordinal_position"
        ),
    )
    .await;
    assert_eq!(
        types,
        vec![
            "posts_id bigint",
            "user_id bigint",
            "title text",
            "published_local timestamp without time zone",
            "published_at timestamp with time zone",
            "day date",
            "price numeric",
            "small smallint",
            "parity text",
            "loaded_at timestamp with time zone",
        ]
    );
    let rows = texts(
        &db,
        &format!(
            "SELECT concat_ws('|', posts_id, user_id, title, published_local, published_at, day, price, small, parity,
                    loaded_at > now() - interval '1 hour')
             FROM {schema}.typed ORDER BY posts_id"
        ),
    )
    .await;
    assert_eq!(
        rows,
        vec![
            "3|2|POST 3|2024-03-03 10:00:00|2024-03-03 10:00:00+00|2024-03-03|3.25|3|odd|t",
            "4|2|POST 4|2024-03-04 10:00:00|2024-03-04 10:00:00+00|2024-03-04|4.25|4|even|t",
            "5|3|POST 5|2024-03-05 10:00:00|2024-03-05 10:00:00+00|2024-03-05|5.25|5|odd|t",
            "6|3|POST 6|2024-03-06 10:00:00|2024-03-06 10:00:00+00|2024-03-06|6.25|6|even|t",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_two_sources_and_of_a_source_with_itself() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_joins").await;
    let addr = serve(api()).await;
    let dir = project(
        addr,
        &schema,
        &[
            (
                "authors",
                r#"{{ sink(name="pg", table="authors") }}
SELECT u.name, count(*) AS posts, max(p.id) AS last_post
FROM {{ use_source("posts") }} p JOIN {{ use_source("users") }} u ON p."userId" = u.id
GROUP BY u.name"#,
            ),
            (
                "pairs",
                r#"{{ sink(name="pg", table="pairs") }}
SELECT a.id, b.title AS next_title
FROM {{ use_source("posts") }} a JOIN {{ use_source("posts") }} b ON b.id = a.id + 1"#,
            ),
        ],
    );
    let run = run_in(dir.path(), &["--jobs", "2"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        texts(
            &db,
            &format!("SELECT name || ':' || posts || ':' || last_post FROM {schema}.authors ORDER BY name")
        )
        .await,
        vec!["ann:2:2", "bob:2:4", "cy:2:6"]
    );
    assert_eq!(
        texts(
            &db,
            &format!("SELECT id || ':' || next_title FROM {schema}.pairs ORDER BY id")
        )
        .await,
        vec!["1:post 2", "2:post 3", "3:post 4", "4:post 5", "5:post 6"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_module_fails_alone_and_the_run_exits_non_zero() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_failures").await;
    let addr = serve(api()).await;
    let dir = project(
        addr,
        &schema,
        &[
            ("a_good", "SELECT * FROM {{ use_source(\"users\") }}"),
            (
                "b_broken",
                "SELECT u.* FROM {{ use_source(\"users\") }} u JOIN {{ use_source(\"broken\") }} b ON u.id = b.id",
            ),
            (
                "c_malformed",
                "SELECT * FROM {{ use_source(\"malformed\") }}",
            ),
        ],
    );
    let run = run_in(dir.path(), &["--summary-json", "-"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: module b_broken failed; its table is unchanged: HTTP 500 Internal Server Error from http://{addr}/broken"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "apitap: module c_malformed failed; its table is unchanged: http://{addr}/malformed: line 2"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("apitap: error: 2 of 3 modules failed: b_broken, c_malformed"),
        "{}",
        run.stderr
    );
    let summaries: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summaries.len(), 3);
    let good = summaries.iter().find(|s| s["module"] == "a_good").unwrap();
    assert_eq!(good["rows"], 3);
    assert_eq!(count(&db, &format!("{schema}.users")).await, 3);
    assert!(!table_exists(&db, &format!("{schema}.broken")).await);
    assert!(!table_exists(&db, &format!("{schema}.malformed")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_command_line_and_merge_by_primary_key_in_dest() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_original").await;
    let addr = serve(api()).await;
    let dir = project(addr, &schema, &[]);
    // The original config format: primary_key_in_dest makes the load a merge.
    let config = format!(
        "sources:\n  - name: users\n    url: http://{addr}/users\n    table_destination_name: people\n    primary_key_in_dest: id\n    retry:\n      max_attempts: 3\n      min_delay_secs: 1\n      max_delay_secs: 5\ntargets:\n  - name: postgres_sink\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
    );
    std::fs::write(dir.path().join("pipelines.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("sql/people.sql"),
        "{{ sink(name=\"postgres_sink\") }}\n\nselect\n    *\nfrom {{ use_source(\"users\") }};\n",
    )
    .unwrap();
    let modules = dir.path().join("sql");
    let config = dir.path().join("pipelines.yaml");
    for _ in 0..2 {
        let run = apitap(
            &[
                "-m",
                modules.to_str().unwrap(),
                "-y",
                config.to_str().unwrap(),
            ],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_eq!(
        texts(
            &db,
            &format!("SELECT id || name FROM {schema}.people ORDER BY id")
        )
        .await,
        vec!["1ann", "2bob", "3cy"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_run_against_the_demo_api() {
    let db = client().await;
    let addr = serve(apitap::demo::router()).await;
    // The examples write to schema demo; start from nothing so the counts are this run's.
    db.batch_execute("DROP TABLE IF EXISTS demo.paid_orders, demo.customer_totals, demo.customers")
        .await
        .unwrap();
    let rows = "12345"; // not a multiple of the page size, so the last page is short
    let root = env!("CARGO_MANIFEST_DIR");
    let run = apitap_env(
        &[
            "run",
            "-m",
            &format!("{root}/examples/sql"),
            "-y",
            &format!("{root}/examples/config/pipelines.yaml"),
            "--jobs",
            "3",
        ],
        &[("DEMO_API", &format!("http://{addr}")), ("DEMO_ROWS", rows)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "apitap: module paid_orders: loaded orders into demo.paid_orders (created): "
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(", 3 pages"), "{}", run.stderr);

    // The same rows loaded plainly, to compute what the modules should have produced.
    let schema = fresh_schema(&db, "run_examples").await;
    let plain = apitap(
        &[
            "load",
            &format!("http://{addr}/rows.ndjson?rows={rows}"),
            "--table",
            &format!("{schema}.orders"),
        ],
        None,
    )
    .await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let differences: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM (
                   (SELECT id, customer_id, round(amount::numeric, 2) AS amount_eur, quantity, status, created_at,
                           (created_at AT TIME ZONE 'UTC')::date AS order_date
                      FROM {schema}.orders WHERE status IN ('paid', 'shipped') AND amount IS NOT NULL
                    EXCEPT ALL
                    SELECT id, customer_id, amount_eur, quantity, status, created_at, order_date FROM demo.paid_orders)
                   UNION ALL
                   (SELECT id, customer_id, amount_eur, quantity, status, created_at, order_date FROM demo.paid_orders
                    EXCEPT ALL
                    SELECT id, customer_id, round(amount::numeric, 2), quantity, status, created_at,
                           (created_at AT TIME ZONE 'UTC')::date
                      FROM {schema}.orders WHERE status IN ('paid', 'shipped') AND amount IS NOT NULL)
                 ) d"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differences, 0);
    let paid: i64 = db
        .query_one("SELECT count(*) FROM demo.paid_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(paid > 3000, "{paid}");

    // Every order's customer exists, so the totals account for every order.
    let totals: (i64, i64) = {
        let row = db
            .query_one(
                "SELECT sum(orders)::bigint, count(*) FROM demo.customer_totals",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(totals.0, 12345);
    let distinct: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT customer_id) FROM {schema}.orders"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(totals.1, distinct);
    assert_eq!(count(&db, "demo.customers").await, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_reject_in_yaml_sets_bad_records_and_refused_rows_aside() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_rejects").await;
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.mixed (id bigint PRIMARY KEY); INSERT INTO {schema}.mixed VALUES (2)"
    ))
    .await
    .unwrap();
    let addr = serve(api()).await;
    let dir = project(addr, &schema, &[]);
    let rejects = dir.path().join("rejects.ndjson");
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: mixed\n    url: http://{addr}/mixed\n    table_destination_name: mixed\n    columns: {{id: bigint}}\n    on_error: reject\n    reject_file: {}\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n",
            rejects.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sql/mixed.sql"),
        "SELECT id FROM {{ use_source(\"mixed\") }}",
    )
    .unwrap();
    let run = run_in(dir.path(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        texts(
            &db,
            &format!("SELECT id::text FROM {schema}.mixed ORDER BY id")
        )
        .await,
        vec!["1", "2", "3"]
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        vec![
            "line 2 (record 2): column \"id\": \"two\" is not an integer (bigint)",
            "PostgreSQL refused the row: duplicate key value violates unique constraint \"mixed_pkey\"; Key (id)=(2) already exists.",
        ]
    );
    assert_eq!(lines[0]["source"], "module mixed");
}

/// Modules running at once (`--jobs`) whose sources would share one reject file each get
/// their own, named with the module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_sharing_a_reject_file_each_get_their_own() {
    let db = client().await;
    let schema = fresh_schema(&db, "run_rejects_jobs").await;
    let addr = serve(api()).await;
    let dir = project(addr, &schema, &[]);
    let rejects = dir.path().join("rejects.ndjson");
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: mixed\n    url: http://{addr}/mixed\n    columns: {{id: bigint}}\n    on_error: reject\n    reject_file: {}\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n",
            rejects.display()
        ),
    )
    .unwrap();
    for module in ["first", "second"] {
        std::fs::write(
            dir.path().join(format!("sql/{module}.sql")),
            format!(
                "{{{{ sink(table=\"{module}\") }}}} SELECT id FROM {{{{ use_source(\"mixed\") }}}}"
            ),
        )
        .unwrap();
    }
    let run = run_in(dir.path(), &["--jobs", "2"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!rejects.exists());
    for module in ["first", "second"] {
        let own = dir.path().join(format!("rejects.{module}.ndjson"));
        let text = std::fs::read_to_string(&own).unwrap();
        assert_eq!(text.lines().count(), 1, "{}: {text}", own.display());
        assert!(
            text.contains(&format!("\"source\":\"module {module}\"")),
            "{text}"
        );
        assert_eq!(count(&db, &format!("{schema}.{module}")).await, 3);
    }
}
