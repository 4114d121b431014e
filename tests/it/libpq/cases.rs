//! The cases: libpq's own URI tests (PostgreSQL's `src/interfaces/libpq/t/001_uri.pl`, with
//! its example host made this machine's and its port the recording server's), `key=value`
//! quoting, every `PG*` variable, service files (after `006_service.pl`), `.pgpass` matching,
//! host lists and the precedence between the string, the service, the environment and the
//! password file. Cases psql refuses must be refused by apitap too (neither reaches the
//! server). `PGPORT` is the recording server's unless a case sets it.

use super::{Case, no_string, string};

pub fn all() -> Vec<Case> {
    let mut all = uris();
    all.extend(uri_parameters());
    all.extend(uri_errors());
    all.extend(keywords());
    all.extend(variables());
    all.extend(services());
    all.extend(password_files());
    all.extend(host_lists());
    all.extend(kept_differences());
    all
}

fn uris() -> Vec<Case> {
    vec![
        string(
            "URI with all parts",
            "postgresql://uri-user:secret@127.0.0.1:{port}/db",
        ),
        string(
            "URI without password",
            "postgresql://uri-user@127.0.0.1:{port}/db",
        ),
        string("URI without port", "postgresql://uri-user@127.0.0.1/db"),
        string("URI without user", "postgresql://127.0.0.1:{port}/db"),
        string("URI with host and db", "postgresql://127.0.0.1/db"),
        string("URI without db", "postgresql://uri-user@127.0.0.1:{port}/"),
        string("URI without db, port", "postgresql://uri-user@127.0.0.1/"),
        string("URI with a user only", "postgresql://uri-user@").local(),
        string("URI host:port", "postgresql://127.0.0.1:{port}"),
        string("URI host/", "postgresql://127.0.0.1/"),
        string("URI host", "postgresql://127.0.0.1"),
        string("empty URI", "postgresql://").local(),
        string("URI hostaddr only", "postgresql://?hostaddr=127.0.0.2"),
        string(
            "URI host and hostaddr",
            "postgresql://localhost?hostaddr=127.0.0.2",
        ),
        string("URI percent-encoded host", "postgresql://%31%32%37.0.0.1/"),
        string("URI user param", "postgresql://127.0.0.1/db?user=uri-user"),
        string(
            "URI user and port params",
            "postgresql://127.0.0.1/db?user=uri-user&port={port}",
        ),
        string(
            "URI encoded param name",
            "postgresql://127.0.0.1/db?u%73er=someotheruser&port={port}",
        ),
        string(
            "URI port and user param",
            "postgresql://127.0.0.1:{port}?user=uri-user",
        ),
        string(
            "URI host and user param",
            "postgresql://127.0.0.1?user=uri-user",
        ),
        string("URI with empty query", "postgresql://127.0.0.1?"),
        string("short URI", "postgres://").local(),
        string("short URI /", "postgres:///").local(),
        string("short URI /db", "postgres:///db").local(),
        string("URI user@/db", "postgres://uri-user@/db").local(),
        string("URI socket folder param", "postgres://?host={dir}"),
        string("URI @host", "postgres://@127.0.0.1"),
        string("URI host:/", "postgres://127.0.0.1:/"),
        string("URI :port/", "postgres://:{port}/").local(),
        string("URI user@?host", "postgres://otheruser@?host={dir}"),
        string("URI user@/?host", "postgres://otheruser@/?host={dir}"),
        string(
            "URI user@:port?host",
            "postgres://otheruser@:{port}?host={dir}",
        ),
        string(
            "URI user@:port/db?host",
            "postgres://otheruser@:{port}/db?host={dir}",
        ),
        string("URI :port/db?host", "postgres://:{port}/db?host={dir}"),
        string("URI encoded socket folder", "postgres://{dir%}/dbname"),
    ]
}

/// URIs with parameters and percent-encoding, as psql reads them.
fn uri_parameters() -> Vec<Case> {
    vec![
        string(
            "URI sslmode=disable",
            "postgresql://127.0.0.1?sslmode=disable",
        ),
        string(
            "URI sslmode=prefer",
            "postgresql://127.0.0.1?sslmode=prefer",
        ),
        string(
            "URI sslmode=require",
            "postgresql://127.0.0.1?sslmode=require",
        ),
        string("URI ssl=true", "postgresql://127.0.0.1?ssl=true"),
        string(
            "URI key given twice",
            "postgresql://127.0.0.1/db?user=a&user=b",
        ),
        string(
            "URI user and user param",
            "postgresql://a@127.0.0.1/db?user=b",
        ),
        string("URI empty user param", "postgresql://127.0.0.1/db?user=").env("PGUSER", "env-user"),
        string(
            "URI percent-encoded password",
            "postgresql://u:p%40ss%3Aw%2Fd@127.0.0.1/db",
        ),
        string("URI plus in password", "postgresql://u:a+b@127.0.0.1/db"),
        string(
            "URI options param",
            "postgresql://127.0.0.1/db?options=-c%20work_mem%3D1MB",
        ),
        string(
            "URI application_name",
            "postgresql://127.0.0.1/db?application_name=my%20app",
        ),
        string(
            "URI two hosts",
            "postgresql://127.0.0.3:{port},127.0.0.2:{port}/db",
        ),
    ]
}

/// URIs psql refuses.
fn uri_errors() -> Vec<Case> {
    vec![
        string(
            "URI unknown param",
            "postgresql://127.0.0.1/db?u%7aer=someotheruser&port={port}",
        ),
        string("URI unknown empty param", "postgresql://127.0.0.1?uzer="),
        string("URI unterminated IPv6", "postgres://[::1"),
        string("URI empty IPv6", "postgres://[]"),
        string("URI junk after IPv6", "postgres://[::1]z"),
        string("URI param without =", "postgresql://127.0.0.1?zzz"),
        string(
            "URI params without =",
            "postgresql://127.0.0.1?value1&value2",
        ),
        string(
            "URI param with two =",
            "postgresql://127.0.0.1?key=key=value",
        ),
        string("URI invalid %XX", "postgres://127.0.0.1?dbname=%XXfoo"),
        string("URI %00", "postgresql://a%00b"),
        string("URI %zz", "postgresql://%zz"),
        string("URI %1", "postgresql://%1"),
        string("URI lone %", "postgresql://%"),
        string("URI raw @ in password", "postgresql://u:p@ss@127.0.0.1/db"),
        string("URI bad port", "postgresql://127.0.0.1:12x/db"),
    ]
}

fn keywords() -> Vec<Case> {
    vec![
        string(
            "quoted values",
            "host=127.0.0.1 port={port} user='a b' dbname='x\\'y' password='p w\\\\z'",
        ),
        string("escaped space", "host=127.0.0.1 user=a\\ b"),
        string("spaces around =", "host = 127.0.0.1 port= {port} user =x"),
        string(
            "keyword given twice",
            "host=127.0.0.3 host=127.0.0.1 user=a user=b",
        ),
        string("empty user", "host=127.0.0.1 user=''").env("PGUSER", "env-user"),
        string("empty user unquoted", "host=127.0.0.1 user= dbname=d").env("PGUSER", "env-user"),
        string("empty dbname", "host=127.0.0.1 user=u dbname=''").env("PGDATABASE", "env-db"),
        string("empty host", "host='' user=u")
            .env("PGHOST", "127.0.0.2")
            .local(),
        string("empty password", "host=127.0.0.1 user=u password=''").env("PGPASSWORD", "env-pw"),
        string("empty options", "host=127.0.0.1 options=''").env("PGOPTIONS", "-c geqo=off"),
        string(
            "options with settings",
            "host=127.0.0.1 options='-c work_mem=1MB -c geqo=off'",
        ),
        string(
            "application_name",
            "host=127.0.0.1 application_name='my app'",
        ),
        string(
            "fallback_application_name",
            "host=127.0.0.1 fallback_application_name=fb",
        ),
        string("connect_timeout", "host=127.0.0.1 connect_timeout=5"),
        string("socket folder host", "host={dir} user=u"),
        string(
            "socket and sslmode=require",
            "host={dir} user=u sslmode=require",
        ),
        string(
            "socket and sslmode=prefer",
            "host={dir} user=u sslmode=prefer",
        ),
        string(
            "tcp and sslmode=disable",
            "host=127.0.0.1 user=u sslmode=disable",
        ),
        string(
            "tcp and sslmode=allow",
            "host=127.0.0.1 user=u sslmode=allow",
        ),
        string(
            "tcp and sslmode=require",
            "host=127.0.0.1 user=u sslmode=require",
        ),
        string("hostaddr without host", "hostaddr=127.0.0.2 user=u"),
        string(
            "hostaddr with host",
            "host=example.invalid hostaddr=127.0.0.2 user=u",
        ),
        string(
            "channel_binding=require",
            "host=127.0.0.1 user=u password=pw channel_binding=require",
        ),
        string(
            "target_session_attrs",
            "host=127.0.0.1 password=pw target_session_attrs=read-write",
        ),
        string(
            "target_session_attrs=primary",
            "host=127.0.0.1 target_session_attrs=primary",
        ),
        string(
            "target_session_attrs=standby",
            "host=127.0.0.1 target_session_attrs=standby",
        ),
        string(
            "target_session_attrs=prefer-standby",
            "host=127.0.0.1,127.0.0.2 target_session_attrs=prefer-standby",
        ),
        string(
            "sslmode=allow, password refused",
            "host=127.0.0.1 user=u password=pw sslmode=allow",
        ),
        string(
            "socket and sslmode=verify-full",
            "host={dir} user=u sslmode=verify-full",
        ),
        string(
            "socket and sslrootcert=system",
            "host={dir} user=u sslrootcert=system",
        ),
        string("unknown keyword", "host=127.0.0.1 colour=blue"),
        string("keyword without =", "host=127.0.0.1 user"),
        string("unterminated quote", "host=127.0.0.1 user='open"),
        string("bad sslmode", "host=127.0.0.1 sslmode=sometimes"),
        string(
            "ports for hosts mismatch",
            "host=127.0.0.1,127.0.0.2,127.0.0.3 port={port},{port}",
        ),
    ]
}

fn variables() -> Vec<Case> {
    vec![
        no_string("nothing at all").local(),
        no_string("USER and LOGNAME are not the user")
            .env("USER", "someone")
            .env("LOGNAME", "someone")
            .local(),
        no_string("PGHOST socket folder").env("PGHOST", "{dir}"),
        no_string("PGHOST address").env("PGHOST", "127.0.0.2"),
        no_string("PGHOSTADDR").env("PGHOSTADDR", "127.0.0.2"),
        no_string("PGDATABASE and PGUSER")
            .env("PGHOST", "127.0.0.1")
            .env("PGDATABASE", "env-db")
            .env("PGUSER", "env-user"),
        no_string("PGPASSWORD")
            .env("PGHOST", "127.0.0.1")
            .env("PGPASSWORD", "env-pw"),
        no_string("PGOPTIONS")
            .env("PGHOST", "127.0.0.1")
            .env("PGOPTIONS", "-c work_mem=2MB"),
        no_string("PGAPPNAME")
            .env("PGHOST", "127.0.0.1")
            .env("PGAPPNAME", "env-app"),
        no_string("PGSSLMODE=require over a socket")
            .env("PGHOST", "{dir}")
            .env("PGSSLMODE", "require"),
        no_string("PGSSLMODE=disable")
            .env("PGHOST", "127.0.0.1")
            .env("PGSSLMODE", "disable"),
        no_string("PGSSLMODE=require")
            .env("PGHOST", "127.0.0.1")
            .env("PGSSLMODE", "require"),
        no_string("PGTZ")
            .env("PGHOST", "127.0.0.1")
            .env("PGTZ", "Europe/Paris"),
        no_string("PGTZ default")
            .env("PGHOST", "127.0.0.1")
            .env("PGTZ", "default"),
        no_string("PGDATESTYLE")
            .env("PGHOST", "127.0.0.1")
            .env("PGDATESTYLE", "ISO, DMY"),
        no_string("PGGEQO")
            .env("PGHOST", "127.0.0.1")
            .env("PGGEQO", "off"),
        no_string("PGCONNECT_TIMEOUT")
            .env("PGHOST", "127.0.0.1")
            .env("PGCONNECT_TIMEOUT", "7"),
        no_string("PGTARGETSESSIONATTRS")
            .env("PGHOST", "127.0.0.1")
            .env("PGTARGETSESSIONATTRS", "read-write"),
        no_string("empty PGUSER")
            .env("PGHOST", "127.0.0.1")
            .env("PGUSER", ""),
        no_string("empty PGHOST").env("PGHOST", "").local(),
        no_string("empty PGDATABASE")
            .env("PGHOST", "127.0.0.1")
            .env("PGDATABASE", ""),
        string(
            "the string before the environment",
            "host=127.0.0.1 user=s-user dbname=s-db",
        )
        .env("PGUSER", "env-user")
        .env("PGDATABASE", "env-db")
        .env("PGHOST", "127.0.0.2"),
        no_string("PGPORT list")
            .env("PGHOST", "127.0.0.3,127.0.0.2")
            .env("PGPORT", "{port},{port}"),
        no_string("PGPORT beside a host list").env("PGHOST", "127.0.0.3,127.0.0.2"),
    ]
}

const SERVICES: &str = "# services\n\
[other]\n\
host=127.0.0.3\n\
\n\
[prod] # main\n\
host=127.0.0.2\n\
user=svc-user\n\
dbname=svc-db\n\
application_name=svc-app\n\
\n\
[last]\n\
  host=127.0.0.1\n\
user=last-user\n";

fn services() -> Vec<Case> {
    vec![
        string("service by name", "service=prod").service_file(SERVICES),
        no_string("PGSERVICE")
            .env("PGSERVICE", "last")
            .service_file(SERVICES),
        string("string before service", "service=prod user=s-user").service_file(SERVICES),
        string("service before environment", "service=prod")
            .env("PGUSER", "env-user")
            .env("PGHOST", "127.0.0.1")
            .service_file(SERVICES),
        string("service in a URI", "postgresql:///?service=prod").service_file(SERVICES),
        string("service in the home folder", "service=prod").file(
            ".pg_service.conf",
            SERVICES,
            0o600,
        ),
        string("service in PGSYSCONFDIR", "service=prod")
            .env("PGSYSCONFDIR", "{home}")
            .file("pg_service.conf", SERVICES, 0o600),
        string("home file before PGSYSCONFDIR", "service=prod")
            .env("PGSYSCONFDIR", "{home}")
            .file("pg_service.conf", "[prod]\nhost=127.0.0.3\n", 0o600)
            .file(".pg_service.conf", SERVICES, 0o600),
        string("service missing from the user's file", "service=last")
            .env("PGSYSCONFDIR", "{home}")
            .file("pg_service.conf", SERVICES, 0o600)
            .file(".pg_service.conf", "[prod]\nhost=127.0.0.3\n", 0o600),
        string("unknown service", "service=nowhere").service_file(SERVICES),
        string("PGSERVICEFILE that does not exist", "service=prod")
            .env("PGSERVICEFILE", "{home}/missing.conf")
            .file(".pg_service.conf", SERVICES, 0o600),
        string("spaces around = in a service file", "service=s")
            .service_file("[s]\nhost = 127.0.0.1\n"),
        string("space after = in a service file", "service=s")
            .service_file("[s]\nhost=127.0.0.1\nuser= spaced \n"),
        string("nested service", "service=s").service_file("[s]\nservice=prod\n"),
        string("unknown keyword in a service", "service=s")
            .service_file("[s]\nhost=127.0.0.1\ncolour=blue\n"),
        string("broken line in another service", "service=s")
            .service_file("[t]\nnonsense\n[s]\nhost=127.0.0.1\n"),
        string("broken line after the service", "service=s")
            .service_file("[s]\nhost=127.0.0.1\n[t]\nnonsense\n"),
        string("service password and pgpass", "service=s")
            .service_file("[s]\nhost=127.0.0.1\nuser=u\npassword=svc-pw\n")
            .file(".pgpass", "*:*:*:*:file-pw\n", 0o600),
    ]
}

fn password_files() -> Vec<Case> {
    vec![
        string("pgpass exact line", "host=127.0.0.1 user=u dbname=db").file(
            ".pgpass",
            "127.0.0.1:{port}:other:u:no\n127.0.0.1:{port}:db:u:yes\n",
            0o600,
        ),
        string("pgpass wildcards", "host=127.0.0.1 user=u").file(".pgpass", "*:*:*:*:any\n", 0o600),
        string("pgpass dbname defaults to user", "host=127.0.0.1 user=u").file(
            ".pgpass",
            "*:*:db:u:no\n*:*:u:u:yes\n",
            0o600,
        ),
        string("pgpass escapes", "host=127.0.0.1 user=u").file(
            ".pgpass",
            "# a comment\n*:*:*:u:pa\\:s\\\\s:extra\n",
            0o600,
        ),
        string("pgpass readable by others", "host=127.0.0.1 user=u").file(
            ".pgpass",
            "*:*:*:*:open\n",
            0o644,
        ),
        string(
            "pgpass with hostaddr and no host",
            "hostaddr=127.0.0.2 user=u",
        )
        .file(
            ".pgpass",
            "localhost:*:*:*:by-name\n127.0.0.2:*:*:*:by-address\n",
            0o600,
        ),
        string(
            "pgpass with host and hostaddr",
            "host=db.example hostaddr=127.0.0.2 user=u",
        )
        .file(
            ".pgpass",
            "127.0.0.2:*:*:*:by-address\ndb.example:*:*:*:by-name\n",
            0o600,
        ),
        string("pgpass for a socket folder", "host={dir} user=u").file(
            ".pgpass",
            "localhost:*:*:*:local\n{dir}:*:*:*:by-folder\n",
            0o600,
        ),
        no_string("pgpass for the default socket")
            .env("PGUSER", "u")
            .file(".pgpass", "localhost:*:*:*:local\n", 0o600)
            .local(),
        string("PGPASSFILE", "host=127.0.0.1 user=u")
            .env("PGPASSFILE", "{home}/pw")
            .file("pw", "*:*:*:*:from-env-file\n", 0o600)
            .file(".pgpass", "*:*:*:*:from-home\n", 0o600),
        string(
            "passfile keyword",
            "host=127.0.0.1 user=u passfile={home}/pw",
        )
        .env("PGPASSFILE", "{home}/.pgpass")
        .file("pw", "*:*:*:*:from-keyword\n", 0o600)
        .file(".pgpass", "*:*:*:*:from-home\n", 0o600),
        string("empty passfile", "host=127.0.0.1 user=u passfile=''").file(
            ".pgpass",
            "*:*:*:*:from-home\n",
            0o600,
        ),
        string(
            "password before pgpass",
            "host=127.0.0.1 user=u password=given",
        )
        .file(".pgpass", "*:*:*:*:from-home\n", 0o600),
        string(
            "empty password and pgpass",
            "host=127.0.0.1 user=u password=",
        )
        .file(".pgpass", "*:*:*:*:from-home\n", 0o600),
        string(
            "pgpass per host in a list",
            "host=127.0.0.3,127.0.0.2 user=u",
        )
        .file(
            ".pgpass",
            "127.0.0.3:*:*:*:first\n127.0.0.2:*:*:*:second\n",
            0o600,
        ),
        string("pgpass and localhost", "host=localhost user=u").file(
            ".pgpass",
            "127.0.0.1:*:*:*:by-address\nlocalhost:*:*:*:by-name\n",
            0o600,
        ),
    ]
}

fn host_lists() -> Vec<Case> {
    vec![
        string(
            "first host refuses",
            "host=127.0.0.3,127.0.0.1 user=u password=pw",
        ),
        string(
            "stop after a refused password",
            "host=127.0.0.1,127.0.0.2 user=u password=pw",
        ),
        string(
            "stop after a missing password",
            "host=127.0.0.1,127.0.0.2 user=u",
        ),
        string(
            "socket then TCP, sslmode=require",
            "host={dir},127.0.0.1 user=u sslmode=require",
        ),
        string(
            "TLS refused on each host",
            "host=127.0.0.1,127.0.0.2 user=u sslmode=require",
        ),
        string(
            "ports per host",
            "host=127.0.0.3,127.0.0.2 port=1,{port} user=u",
        ),
        string(
            "hostaddrs per host",
            "host=a.invalid,b.invalid hostaddr=127.0.0.3,127.0.0.2 user=u",
        ),
        string("empty host in a list", "host=127.0.0.3,,127.0.0.2 user=u").local(),
        string(
            "URI host list with ports",
            "postgresql://u@127.0.0.3:1,127.0.0.2:{port}/db",
        ),
        string(
            "host list and one port",
            "host=127.0.0.3,127.0.0.1 port={port} user=u",
        ),
    ]
}

/// Settings apitap refuses, by name, rather than honour part-way (docs/connections.md).
fn kept_differences() -> Vec<Case> {
    vec![
        string("client_encoding", "host=127.0.0.1 client_encoding=LATIN1")
            .kept("client_encoding=LATIN1 is not supported"),
        string("sslcrl", "host=127.0.0.1 sslcrl=/nonexistent.crl")
            .kept("sslcrl=/nonexistent.crl is not supported"),
        string("replication", "host=127.0.0.1 replication=database")
            .kept("replication=database is not supported"),
        // psql -d takes a word that is no connection string as a database name.
        string("a bare word", "postgre://").kept(
            "invalid connection string: missing \"=\" after \"postgre://\" in connection info string",
        ),
    ]
}
