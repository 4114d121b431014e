//! Connections as libpq makes them, against the throwaway TLS servers of scripts/pg-tls.sh
//! (run by scripts/test.sh): every sslmode, a wrong CA, a wrong host name, libpq's default
//! root file, an expired X.509 v1 certificate, a client certificate login, .pgpass, the
//! service file, connect_timeout, PGAPPNAME and PGOPTIONS, and YAML targets honoring them.

use std::path::{Path, PathBuf};

use crate::common::*;

struct Servers {
    dir: PathBuf,
    port: String,
    odd_port: String,
}

fn servers() -> Servers {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run scripts/test.sh, which starts the TLS servers (scripts/pg-tls.sh)")
        })
    };
    Servers {
        dir: PathBuf::from(var("APITAP_TLS_DIR")),
        port: var("APITAP_TLS_PORT"),
        odd_port: var("APITAP_TLS_ODD_PORT"),
    }
}

impl Servers {
    fn cert(&self, name: &str) -> String {
        self.dir.join("certs").join(name).display().to_string()
    }

    /// The CA-signed server, as `host=HOST port=… dbname=postgres user=postgres` plus
    /// `extra` (whose keywords win, the last of a repeated keyword counting, as in libpq).
    fn conninfo(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} port={} dbname=postgres user=postgres {extra}",
            self.port
        )
    }

    /// A superuser session over the server's socket (no TLS needed), to look at what landed.
    async fn socket(&self, server: &str, port: &str) -> tokio_postgres::Client {
        let socket = self.dir.join(server);
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&socket)
            .port(port.parse().unwrap())
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

/// A fresh schema on the CA-signed server that every test role may write.
async fn fresh(db: &tokio_postgres::Client, schema: &str) -> String {
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         GRANT ALL ON SCHEMA {schema} TO certuser, pwuser"
    ))
    .await
    .unwrap();
    format!("{schema}.t")
}

/// `apitap load` of one record into `table` over `conninfo`, with `HOME` set to `home` (an
/// empty folder unless the test put files there) and `env`.
async fn load(conninfo: &str, table: &str, home: &Path, env: &[(&str, &str)]) -> Run {
    let mut vars = vec![("HOME", home.to_str().unwrap())];
    vars.extend_from_slice(env);
    apitap_env(
        &["load", "-", "--table", table, "--database-url", conninfo],
        &vars,
        Some(b"{\"a\": 1}\n".to_vec()),
    )
    .await
}

fn assert_loaded(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what}: {}", run.stderr);
}

fn assert_refused(run: &Run, what: &str, expected: &str) {
    assert_eq!(run.code, 1, "{what}: {}", run.stderr);
    assert!(
        run.stderr.contains(expected),
        "{what}: expected {expected:?} in: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_as_libpq_against_a_ca_signed_server() {
    let s = servers();
    let db = s.socket("ca", &s.port).await;
    let table = fresh(&db, "tls_modes").await;
    let home = tempfile::tempdir().unwrap();
    let (ca, other) = (s.cert("ca.crt"), s.cert("other-ca.crt"));
    let mut loaded = 0;
    let mut ok = async |conninfo: String, what: &str| {
        assert_loaded(&load(&conninfo, &table, home.path(), &[]).await, what);
        loaded += 1;
    };
    // The server takes TLS connections only: every mode that connects used TLS.
    ok(s.conninfo("localhost", ""), "the default, prefer").await;
    ok(s.conninfo("localhost", "sslmode=prefer"), "prefer").await;
    ok(s.conninfo("localhost", "sslmode=require"), "require").await;
    ok(s.conninfo("localhost", "sslmode=allow"), "allow").await;
    ok(
        s.conninfo("localhost", &format!("sslmode=verify-ca sslrootcert={ca}")),
        "verify-ca",
    )
    .await;
    ok(
        s.conninfo("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
        "verify-ca does not check the host name",
    )
    .await;
    ok(
        s.conninfo(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        "verify-full",
    )
    .await;
    ok(
        format!(
            "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            s.port,
            ca.replace('/', "%2F")
        ),
        "a URL, percent-encoded",
    )
    .await;

    modes_that_refuse(&s, &table, home.path(), &ca, &other).await;
    let refused = |conninfo: String| load_owned(conninfo, table.clone(), home.path().to_path_buf());

    // libpq's default root file: verify-* use it, and require verifies with it too.
    let dot = home.path().join(".postgresql");
    std::fs::create_dir(&dot).unwrap();
    std::fs::copy(&ca, dot.join("root.crt")).unwrap();
    let mut ok = async |conninfo: String, what: &str| {
        assert_loaded(&load(&conninfo, &table, home.path(), &[]).await, what);
        loaded += 1;
    };
    ok(
        s.conninfo("localhost", "sslmode=verify-full"),
        "the default root file",
    )
    .await;
    std::fs::copy(&other, dot.join("root.crt")).unwrap();
    assert_refused(
        &refused(s.conninfo("localhost", "sslmode=require")).await,
        "require with a root file verifies",
        &format!(
            "TLS: the server's certificate is not signed by a CA in {}",
            dot.join("root.crt").display()
        ),
    );
    // PGSSLMODE and PGSSLROOTCERT, with the connection string silent.
    let run = load(
        &s.conninfo("localhost", ""),
        &table,
        home.path(),
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    )
    .await;
    assert_loaded(&run, "PGSSLMODE and PGSSLROOTCERT");
    loaded += 1;
    assert_eq!(count(&db, &table).await, loaded);
}

/// What libpq refuses, refused alike: no TLS on a TLS-only server, a wrong host name, a
/// wrong CA, the system's roots, a missing root file.
async fn modes_that_refuse(s: &Servers, table: &str, home: &Path, ca: &str, other: &str) {
    let refused = |conninfo: String| load_owned(conninfo, table.to_string(), home.to_path_buf());
    assert_refused(
        &refused(s.conninfo("localhost", "sslmode=disable")).await,
        "disable",
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"postgres\", no encryption",
    );
    assert_refused(
        &refused(s.conninfo(
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ))
        .await,
        "a wrong host name",
        &format!(
            "could not connect to PostgreSQL at postgres@127.0.0.1:{}/postgres: TLS: server certificate for \"localhost\" does not match host name \"127.0.0.1\"",
            s.port
        ),
    );
    for mode in ["verify-ca", "verify-full"] {
        assert_refused(
            &refused(s.conninfo("localhost", &format!("sslmode={mode} sslrootcert={other}"))).await,
            "a wrong CA",
            &format!("TLS: the server's certificate is not signed by a CA in {other}"),
        );
    }
    assert_refused(
        &refused(s.conninfo("localhost", "sslmode=verify-full sslrootcert=system")).await,
        "the system's roots do not know the test CA",
        "TLS: the server's certificate is not signed by a CA in the operating system's trusted roots",
    );
    assert_refused(
        &refused(s.conninfo("localhost", "sslmode=verify-full")).await,
        "no root file",
        &format!(
            "root certificate file \"{}\" does not exist",
            home.join(".postgresql/root.crt").display()
        ),
    );
}

/// `load` with owned arguments, for closures.
async fn load_owned(conninfo: String, table: String, home: PathBuf) -> Run {
    load(&conninfo, &table, &home, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_require_accept_an_expired_x509_v1_self_signed_certificate() {
    let s = servers();
    let db = s.socket("odd", &s.odd_port).await;
    let table = fresh(&db, "tls_odd").await;
    let home = tempfile::tempdir().unwrap();
    let odd = format!(
        "host=localhost port={} dbname=postgres user=postgres",
        s.odd_port
    );
    for mode in ["prefer", "require"] {
        let run = load(&format!("{odd} sslmode={mode}"), &table, home.path(), &[]).await;
        assert_loaded(&run, mode);
    }
    assert_eq!(count(&db, &table).await, 2);
    // Verifying it, even with the certificate itself as the root, finds it expired.
    let run = load(
        &format!("{odd} sslmode=verify-ca sslrootcert={}", s.cert("odd.crt")),
        &table,
        home.path(),
        &[],
    )
    .await;
    assert_refused(
        &run,
        "verify-ca",
        "TLS: the server's certificate expired at 2021-01-01",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in() {
    let s = servers();
    let db = s.socket("ca", &s.port).await;
    let table = fresh(&db, "tls_client_cert").await;
    let home = tempfile::tempdir().unwrap();
    let verify = format!(
        "user=certuser sslmode=verify-full sslrootcert={}",
        s.cert("ca.crt")
    );
    let with_cert = format!(
        "{verify} sslcert={} sslkey={}",
        s.cert("client.crt"),
        s.cert("client.key")
    );
    assert_loaded(
        &load(
            &s.conninfo("localhost", &with_cert),
            &table,
            home.path(),
            &[],
        )
        .await,
        "sslcert and sslkey",
    );
    assert_refused(
        &load(&s.conninfo("localhost", &verify), &table, home.path(), &[]).await,
        "no client certificate",
        "connection requires a valid client certificate",
    );
    // libpq's default files, ~/.postgresql/postgresql.crt and .key.
    let dot = home.path().join(".postgresql");
    std::fs::create_dir(&dot).unwrap();
    std::fs::copy(s.cert("client.crt"), dot.join("postgresql.crt")).unwrap();
    std::fs::copy(s.cert("client.key"), dot.join("postgresql.key")).unwrap();
    assert_loaded(
        &load(&s.conninfo("localhost", &verify), &table, home.path(), &[]).await,
        "the default client certificate files",
    );
    // A key others may read is refused, as libpq refuses it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dot.join("postgresql.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_refused(
        &load(&s.conninfo("localhost", &verify), &table, home.path(), &[]).await,
        "a readable key",
        &format!(
            "private key file \"{}\" has group or world access",
            dot.join("postgresql.key").display()
        ),
    );
    let who: Vec<String> = db
        .query(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'tls_client_cert'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(who, ["certuser"]);
    assert_eq!(count(&db, &table).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_pgpass_and_settings_from_the_service_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = servers();
    let db = s.socket("ca", &s.port).await;
    let table = fresh(&db, "tls_pgpass").await;
    let home = tempfile::tempdir().unwrap();
    let secret = "pw-secret-7d1e";
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("# test\nlocalhost:{}:*:pwuser:{secret}\n", s.port),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conninfo = s.conninfo("localhost", "user=pwuser sslmode=require");
    let run = load(&conninfo, &table, home.path(), &[]).await;
    assert_loaded(&run, ".pgpass");

    // Readable by others: ignored with libpq's warning, so the login fails.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = load(&conninfo, &table, home.path(), &[]).await;
    assert_refused(&run, "a readable .pgpass", "password");
    assert!(
        run.stderr.contains(&format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            pgpass.display()
        )),
        "{}",
        run.stderr
    );

    // PGPASSFILE, and a service in PGSERVICEFILE holding the rest.
    let elsewhere = home.path().join("passwords");
    std::fs::write(&elsewhere, format!("*:*:*:pwuser:{secret}\n")).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    let services = home.path().join("services.conf");
    std::fs::write(
        &services,
        format!(
            "[warehouse]\nhost=localhost\nport={}\ndbname=postgres\nuser=pwuser\nsslmode=verify-full\nsslrootcert={}\n",
            s.port,
            s.cert("ca.crt")
        ),
    )
    .unwrap();
    let run = load(
        "service=warehouse",
        &table,
        home.path(),
        &[
            ("PGPASSFILE", elsewhere.to_str().unwrap()),
            ("PGSERVICEFILE", services.to_str().unwrap()),
        ],
    )
    .await;
    assert_loaded(&run, "PGSERVICEFILE and PGPASSFILE");
    // PGSERVICE alone, with no connection string at all.
    let run = load(
        "",
        &table,
        home.path(),
        &[
            ("DATABASE_URL", ""),
            ("PGPASSFILE", elsewhere.to_str().unwrap()),
            ("PGSERVICEFILE", services.to_str().unwrap()),
            ("PGSERVICE", "warehouse"),
        ],
    )
    .await;
    assert_loaded(&run, "PGSERVICE");
    assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
    assert_eq!(count(&db, &table).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    // Accepts the connection, then says nothing, as a hung server or a black-holed proxy.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let home = tempfile::tempdir().unwrap();
    let run = load(
        &format!("host=127.0.0.1 port={port} user=u dbname=d"),
        "t",
        home.path(),
        &[("PGCONNECT_TIMEOUT", "2")],
    )
    .await;
    assert_refused(
        &run,
        "PGCONNECT_TIMEOUT",
        &format!(
            "could not connect to PostgreSQL at u@127.0.0.1:{port}/d: no answer within 2 s (connect_timeout)"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgappname_and_pgoptions_reach_the_session() {
    let db = client().await;
    let schema = fresh_schema(&db, "libpq_env").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (a int, app text DEFAULT current_setting('application_name'), \
         mem text DEFAULT current_setting('work_mem'))"
    ))
    .await
    .unwrap();
    let run = apitap_env(
        &["load", "-", "--table", &table],
        &[
            ("PGAPPNAME", "nightly-orders"),
            ("PGOPTIONS", "-c work_mem=7MB"),
        ],
        Some(b"{\"a\": 1}\n".to_vec()),
    )
    .await;
    assert_loaded(&run, "PGAPPNAME and PGOPTIONS");
    let row = db
        .query_one(&format!("SELECT app, mem FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("nightly-orders".into(), "7MB".into())
    );
}

/// Every form of a YAML target — its own keys, `url:`, `url_env:` — takes `sslmode:`,
/// `params:` and libpq's variables the same way.
#[cfg(feature = "sql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_targets_of_every_form_honor_sslmode_params_and_the_environment() {
    let s = servers();
    let db = s.socket("ca", &s.port).await;
    let table = fresh(&db, "tls_yaml").await;
    let addr =
        serve(axum::Router::new().route("/rows", axum::routing::get(|| async { "{\"a\": 1}\n" })))
            .await;
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sql")).unwrap();
    std::fs::write(
        dir.path().join("sql/rows.sql"),
        format!("{{{{ sink(table=\"{table}\") }}}} SELECT * FROM {{{{ use_source(\"rows\") }}}}"),
    )
    .unwrap();
    let (ca, other) = (s.cert("ca.crt"), s.cert("other-ca.crt"));
    let run = async |target: String, env: &[(&str, &str)]| {
        std::fs::write(
            dir.path().join("pipelines.yaml"),
            format!(
                "sources:\n  - name: rows\n    url: http://{addr}/rows\ntargets:\n  - name: pg\n    type: postgres\n{target}"
            ),
        )
        .unwrap();
        let (sql, yaml) = (dir.path().join("sql"), dir.path().join("pipelines.yaml"));
        let mut vars = vec![("HOME", home.path().to_str().unwrap())];
        vars.extend_from_slice(env);
        apitap_env(
            &[
                "run",
                "-m",
                sql.to_str().unwrap(),
                "-y",
                yaml.to_str().unwrap(),
            ],
            &vars,
            None,
        )
        .await
    };
    let port = &s.port;
    let keys = format!(
        "    host: localhost\n    port: {port}\n    database: postgres\n    auth: {{username: postgres}}\n    sslmode: verify-full\n"
    );
    assert_loaded(
        &run(format!("{keys}    params: {{sslrootcert: {ca}}}\n"), &[]).await,
        "keys, sslmode and params",
    );
    assert_refused(
        &run(keys.clone(), &[("PGSSLROOTCERT", &other)]).await,
        "keys with PGSSLROOTCERT",
        &format!("TLS: the server's certificate is not signed by a CA in {other}"),
    );
    let conninfo = format!("host=localhost port={port} dbname=postgres user=postgres");
    assert_loaded(
        &run(
            format!("    url: \"{conninfo}\"\n    sslmode: verify-full\n"),
            &[("PGSSLROOTCERT", &ca)],
        )
        .await,
        "url with sslmode and PGSSLROOTCERT",
    );
    assert_refused(
        &run(
            "    url_env: TLS_TARGET\n    sslmode: verify-full\n".into(),
            &[
                ("TLS_TARGET", &format!("{conninfo} host=127.0.0.1")),
                ("PGSSLROOTCERT", &ca),
            ],
        )
        .await,
        "url_env with sslmode",
        "TLS: server certificate for \"localhost\" does not match host name \"127.0.0.1\"",
    );
    assert_eq!(count(&db, &table).await, 2);
}
