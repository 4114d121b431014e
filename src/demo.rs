//! The bundled demo API: deterministic rows shaped like a typical API's, for the demo, the
//! benchmarks and the tests.
//!
//! Row `i` is always the same, so a load can be checked value by value. Bodies are generated
//! while they stream, so a million rows cost no memory on the server.
//!
//! - `GET /rows.ndjson?rows=N` — NDJSON
//! - `GET /rows.json?rows=N` — one JSON array
//! - `GET /rows?page=P&per_page=K&rows=N` — `{"data": [...], "page", "per_page", "total"}`
//! - `GET /customers?rows=N` — a JSON array of the customers rows refer to (`customer_id`),
//!   with camelCase fields as many APIs have
//! - `POST /search` with `{"rows": N}` — NDJSON, as `/rows.ndjson` (an API that wants a body)
//! - `GET /events?after=ID&limit=K&rows=N` — cursor paging: `{"items": [...], "next_cursor":
//!   "ID", "has_more": true}`, the rows after `after`
//! - `GET /tweets.ndjson?rows=N` — nested, tweet-shaped records as NDJSON ([`tweets`])

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;

mod tweets;
pub(crate) use tweets::dump as dump_tweets;

/// Rows served when `rows` is not given.
pub(crate) const DEFAULT_ROWS: u64 = 1_000_000;
const ROWS_PER_CHUNK: u64 = 1000;

const STATUSES: [&str; 6] = [
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
const WORDS: [&str; 16] = [
    "order",
    "parcel",
    "express",
    "café",
    "naïve",
    "widget",
    "blue",
    "crate",
    "日本",
    "fragile",
    "return",
    "gift",
    "north",
    "warehouse",
    "priority",
    "sample",
];

/// A fixed, well-mixed hash of the row number (splitmix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn words(out: &mut Vec<u8>, mut h: u64, min_len: usize) {
    let start = out.len();
    let mut first = true;
    while out.len() - start < min_len {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(WORDS[(h % WORDS.len() as u64) as usize].as_bytes());
        h = mix(h);
    }
}

/// Writes row `i` (1-based) as one JSON object. About a fifth of the optional fields are null.
pub fn write_row(i: u64, out: &mut Vec<u8>) {
    let h = mix(i);
    let g = mix(h);
    let null = |salt: u64| (mix(h ^ salt) % 5) == 0;
    let _ = write!(
        out,
        "{{\"id\":{i},\"uuid\":\"{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}\",\"customer_id\":{}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        g & 0xfff,
        g >> 16 & 0xffff_ffff_ffff,
        h % 100_000
    );
    if null(1) {
        out.extend_from_slice(b",\"amount\":null");
    } else {
        let _ = write!(out, ",\"amount\":{}.{:02}", g % 100_000, (g >> 20) % 100);
    }
    let _ = write!(out, ",\"quantity\":{}", (h >> 8) % 50);
    if null(2) {
        out.extend_from_slice(b",\"is_active\":null");
    } else {
        let _ = write!(out, ",\"is_active\":{}", (g >> 3) & 1 == 1);
    }
    let _ = write!(
        out,
        ",\"status\":\"{}\",\"title\":\"",
        STATUSES[(h % STATUSES.len() as u64) as usize]
    );
    words(out, g, 16);
    out.extend_from_slice(b"\",\"description\":");
    if null(3) {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        words(out, h ^ g, 100);
        out.push(b'"');
    }
    // Spread over 2024, with microseconds and a mix of offsets.
    let seconds = 1_704_067_200 + (i * 31) % 31_536_000;
    let micros = h % 1_000_000;
    let (offset, shift) = if i % 3 == 0 {
        ("+02:00", 7200)
    } else {
        ("Z", 0)
    };
    let wall = chrono::DateTime::from_timestamp((seconds + shift) as i64, 0)
        .unwrap_or_default()
        .naive_utc();
    let _ = write!(
        out,
        ",\"created_at\":\"{}.{micros:06}{offset}\"",
        wall.format("%Y-%m-%dT%H:%M:%S")
    );
    if null(4) {
        out.extend_from_slice(b",\"due_date\":null");
    } else {
        let due = wall.date() + chrono::Days::new(g % 90);
        let _ = write!(out, ",\"due_date\":\"{}\"", due.format("%Y-%m-%d"));
    }
    if null(5) {
        out.extend_from_slice(b",\"metadata\":null}");
    } else {
        let _ = write!(
            out,
            ",\"metadata\":{{\"source\":\"{}\",\"tags\":[\"{}\",\"{}\"],\"score\":0.{:02}}}}}",
            ["web", "mobile", "api"][(g % 3) as usize],
            WORDS[(g % 7) as usize],
            WORDS[(h % 5) as usize],
            g % 100
        );
    }
}

fn param(query: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A rendered run of rows: first, last, separator, whether the last row has one too.
type ChunkKey = (u64, u64, &'static [u8], bool);

/// Rendered chunks, kept so that repeated requests (benchmarks) cost the server almost
/// nothing: on a shared machine the demo server's own JSON formatting would otherwise compete
/// with the load it serves. Bounded; past the bound chunks are rendered every time.
static RENDERED: std::sync::LazyLock<std::sync::Mutex<(HashMap<ChunkKey, Bytes>, usize)>> =
    std::sync::LazyLock::new(Default::default);
const RENDERED_MAX_BYTES: usize = 1 << 30;

/// Rows `first..=last`, each followed by `separator` (the last one only if `trailing`).
fn render(first: u64, last: u64, separator: &'static [u8], trailing: bool) -> Bytes {
    let key = (first, last, separator, trailing);
    if let Some(hit) = RENDERED.lock().ok().and_then(|c| c.0.get(&key).cloned()) {
        return hit;
    }
    let mut out = Vec::with_capacity(((last - first + 1) * 420) as usize);
    for i in first..=last {
        write_row(i, &mut out);
        if i < last || trailing {
            out.extend_from_slice(separator);
        }
    }
    let bytes = Bytes::from(out);
    if let Ok(mut cache) = RENDERED.lock()
        && cache.1 + bytes.len() <= RENDERED_MAX_BYTES
    {
        cache.1 += bytes.len();
        cache.0.insert(key, bytes.clone());
    }
    bytes
}

/// Streams rows `first..=last`, each followed by `separator`, in chunks.
fn row_stream(
    first: u64,
    last: u64,
    separator: &'static [u8],
    prefix: Vec<u8>,
    suffix: Vec<u8>,
) -> Body {
    let chunks = futures_util::stream::unfold(
        (first, Some(prefix), Some(suffix)),
        move |(next, prefix, suffix)| async move {
            if next > last {
                // The prefix is still owed when there were no rows at all (a page past the end).
                let mut tail = prefix.unwrap_or_default();
                tail.extend_from_slice(&suffix?);
                return Some((Ok::<_, Infallible>(Bytes::from(tail)), (next, None, None)));
            }
            let end = (next + ROWS_PER_CHUNK - 1).min(last);
            let rows = render(next, end, separator, end < last || separator == b"\n");
            let chunk = match prefix {
                Some(mut p) if !p.is_empty() => {
                    p.extend_from_slice(&rows);
                    Bytes::from(p)
                }
                _ => rows,
            };
            Some((Ok(chunk), (end + 1, None, suffix)))
        },
    );
    Body::from_stream(chunks)
}

async fn ndjson(Query(query): Query<HashMap<String, String>>) -> Response {
    let rows = param(&query, "rows", DEFAULT_ROWS);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        row_stream(1, rows, b"\n", Vec::new(), Vec::new()),
    )
        .into_response()
}

async fn tweets_ndjson(Query(query): Query<HashMap<String, String>>) -> Response {
    let rows = param(&query, "rows", DEFAULT_ROWS);
    let chunks = futures_util::stream::unfold(1, move |next| async move {
        if next > rows {
            return None;
        }
        let end = (next + ROWS_PER_CHUNK - 1).min(rows);
        let mut out = Vec::with_capacity(((end - next + 1) * 900) as usize);
        for i in next..=end {
            tweets::write_tweet(i, &mut out);
            out.push(b'\n');
        }
        Some((Ok::<_, Infallible>(Bytes::from(out)), end + 1))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn json_array(Query(query): Query<HashMap<String, String>>) -> Response {
    let rows = param(&query, "rows", DEFAULT_ROWS);
    (
        [(header::CONTENT_TYPE, "application/json")],
        row_stream(1, rows, b",\n", b"[\n".to_vec(), b"\n]\n".to_vec()),
    )
        .into_response()
}

async fn pages(Query(query): Query<HashMap<String, String>>) -> Response {
    let total = param(&query, "rows", DEFAULT_ROWS);
    let page = param(&query, "page", 1).max(1);
    let per_page = param(&query, "per_page", 1000).clamp(1, 100_000);
    let first = (page - 1) * per_page + 1;
    let last = (page * per_page).min(total);
    let suffix = format!("],\"page\":{page},\"per_page\":{per_page},\"total\":{total}}}");
    (
        [(header::CONTENT_TYPE, "application/json")],
        row_stream(
            first,
            last,
            b",",
            b"{\"data\":[".to_vec(),
            suffix.into_bytes(),
        ),
    )
        .into_response()
}

async fn search(body: Bytes) -> Response {
    let rows = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("rows")?.as_u64());
    let Some(rows) = rows else {
        let refusal = "the body must be JSON with a number of rows: {\"rows\": 100}\n";
        return (axum::http::StatusCode::BAD_REQUEST, refusal).into_response();
    };
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        row_stream(1, rows, b"\n", Vec::new(), Vec::new()),
    )
        .into_response()
}

async fn events(Query(query): Query<HashMap<String, String>>) -> Response {
    let total = param(&query, "rows", DEFAULT_ROWS);
    let after = param(&query, "after", 0);
    let limit = param(&query, "limit", 1000).clamp(1, 100_000);
    let first = after + 1;
    let last = (after + limit).min(total);
    let has_more = last < total;
    let next = match first <= last {
        true => format!("\"{last}\""),
        false => "null".to_string(),
    };
    let suffix = format!("],\"next_cursor\":{next},\"has_more\":{has_more}}}");
    (
        [(header::CONTENT_TYPE, "application/json")],
        row_stream(
            first,
            last,
            b",",
            b"{\"items\":[".to_vec(),
            suffix.into_bytes(),
        ),
    )
        .into_response()
}

/// Customers served when `rows` is not given: every `customer_id` a row can have.
pub(crate) const DEFAULT_CUSTOMERS: u64 = 100_000;
const COUNTRIES: [&str; 5] = ["DE", "FR", "JP", "US", "BR"];

/// Writes customer `i` (0-based) as one JSON object.
pub(crate) fn write_customer(i: u64, out: &mut Vec<u8>) {
    let h = mix(i ^ 0x5eed);
    let signup = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default()
        + chrono::Duration::days((h % 2000) as i64);
    let _ = write!(
        out,
        "{{\"customerId\":{i},\"displayName\":\"Customer {i}\",\"country\":\"{}\",\"signupDate\":\"{}\",\"tier\":{}}}",
        COUNTRIES[(h % 5) as usize],
        signup.format("%Y-%m-%d"),
        (h >> 8) % 3 + 1
    );
}

async fn customers(Query(query): Query<HashMap<String, String>>) -> Response {
    let rows = param(&query, "rows", DEFAULT_CUSTOMERS).min(10 * DEFAULT_CUSTOMERS);
    let mut body = Vec::with_capacity(rows as usize * 100 + 4);
    body.push(b'[');
    for i in 0..rows {
        if i > 0 {
            body.extend_from_slice(b",\n");
        }
        write_customer(i, &mut body);
    }
    body.extend_from_slice(b"]\n");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Writes rows `1..=rows` as NDJSON, for benchmarks that need the data as a file.
///
/// # Errors
/// The writer fails.
pub(crate) fn dump(rows: u64, out: &mut impl std::io::Write) -> std::io::Result<()> {
    dump_records(rows, out, write_row)
}

/// Writes records `1..=rows`, each as `write` makes it, as NDJSON.
fn dump_records(
    rows: u64,
    out: &mut impl std::io::Write,
    write: fn(u64, &mut Vec<u8>),
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 1..=rows {
        write(i, &mut buf);
        buf.push(b'\n');
        if buf.len() > (1 << 20) {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()
}

/// The demo API's routes.
pub fn router() -> Router {
    Router::new()
        .route("/rows.ndjson", get(ndjson))
        .route("/tweets.ndjson", get(tweets_ndjson))
        .route("/rows.json", get(json_array))
        .route("/rows", get(pages))
        .route("/customers", get(customers))
        .route("/events", get(events))
        .route("/search", axum::routing::post(search))
        .route("/health", get(|| async { "ok" }))
}

/// Serves the demo API until the process ends.
///
/// # Errors
/// The address cannot be bound.
pub(crate) async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "apitap demo API on http://{}/rows.ndjson?rows={DEFAULT_ROWS}",
        listener.local_addr()?
    );
    // Without TCP_NODELAY small responses wait ~40 ms for delayed ACKs on loopback.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_valid_json_with_nulls() {
        let mut a = Vec::new();
        write_row(42, &mut a);
        let mut b = Vec::new();
        write_row(42, &mut b);
        assert_eq!(a, b);
        let mut nulls = 0;
        for i in 1..=1000 {
            let mut out = Vec::new();
            write_row(i, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["id"], i);
            assert_eq!(v.as_object().unwrap().len(), 12);
            nulls += usize::from(v["description"].is_null());
        }
        assert!(
            (150..250).contains(&nulls),
            "{nulls} null descriptions of 1000"
        );
    }
}
