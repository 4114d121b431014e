//! The paging contracts of well-known APIs, each reproduced by a local server as its
//! documentation describes it, loaded with the configuration docs/http-sources.md gives for it: every
//! record arrives, and a server that says there is more without saying where fails the load.

use axum::Router;
use axum::http::{HeaderMap, Uri, header};
use axum::response::IntoResponse;

use crate::common::*;

/// Records in each API, served 100 to a page.
const TOTAL: u64 = 250;
const PAGE: u64 = 100;

fn query(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Records `first..` (up to 100, not past TOTAL) as JSON objects with string ids `{prefix}N`.
fn records(first: u64, prefix: &str) -> (Vec<String>, u64) {
    let last = (first + PAGE - 1).min(TOTAL);
    let rows = (first..=last)
        .map(|i| format!("{{\"id\": \"{prefix}{i}\", \"n\": {i}}}"))
        .collect();
    (rows, last)
}

/// Loads `path` from a server built by `router` with the extra flags; checks that every
/// record arrived once.
async fn loads_all(name: &str, router: Router, path: &str, extra: &[&str]) {
    let db = client().await;
    let schema = fresh_schema(&db, &format!("contract_{name}")).await;
    let addr = serve(router).await;
    let mut args = vec!["load", "", "--table", "", "--retry", "{max_attempts: 1}"];
    let url = format!("http://{addr}{path}");
    let table = format!("{schema}.t");
    args[1] = &url;
    args[3] = &table;
    args.extend_from_slice(extra);
    let run = apitap(&args, None).await;
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    let row = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT n), min(n), max(n) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    let got: (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(got, (TOTAL as i64, TOTAL as i64, 1, TOTAL as i64), "{name}");
}

/// Stripe: `GET /v1/customers?limit=100&starting_after=<id of the last object>`, answered
/// `{"object": "list", "data": [...], "has_more": true}`.
fn stripe(drop_has_more_data: bool) -> Router {
    Router::new().fallback(move |uri: Uri| async move {
        let after: u64 = query(&uri, "starting_after")
            .and_then(|id| id.trim_start_matches("cus_").parse().ok())
            .unwrap_or(0);
        let (rows, last) = records(after + 1, "cus_");
        let rows = if drop_has_more_data && after > 0 { Vec::new() } else { rows };
        format!(
            "{{\"object\": \"list\", \"url\": \"/v1/customers\", \"has_more\": {}, \"data\": [{}]}}",
            last < TOTAL,
            rows.join(",")
        )
    })
}

const STRIPE: [&str; 4] = [
    "--records-path",
    "/data",
    "--pagination",
    "{kind: cursor, cursor_param: starting_after, last_record_path: /id, has_more_path: /has_more, page_size: 100, page_size_param: limit}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_starting_after_the_last_object() {
    loads_all("stripe", stripe(false), "/v1/customers", &STRIPE).await;
    // has_more: true, but a page with no object to start after: the load fails.
    let db = client().await;
    let schema = fresh_schema(&db, "contract_stripe_broken").await;
    let addr = serve(stripe(true)).await;
    let mut args = vec![
        "load".to_string(),
        format!("http://{addr}/v1/customers"),
        "--table".into(),
        format!("{schema}.t"),
    ];
    args.extend(STRIPE.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = apitap(&argv, None).await;
    assert_fails(
        &run,
        "page 2 says there is more (true at /has_more) but its last record has no cursor at /id",
    );
    assert!(!table_exists(&db, &format!("{schema}.t")).await);
}

/// GitHub: a top-level array, `Link: <…?per_page=100&page=2>; rel="next", <…>; rel="last"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_link_headers() {
    let router = Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
        let host = headers
            .get(header::HOST)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let page: u64 = query(&uri, "page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let (rows, last) = records((page - 1) * PAGE + 1, "");
        let mut response = format!("[{}]", rows.join(",")).into_response();
        let mut links = vec![format!(
            "<http://{host}/repos/o/r/issues?per_page=100&page=1>; rel=\"first\""
        )];
        if last < TOTAL {
            links.insert(
                0,
                format!(
                    "<http://{host}/repos/o/r/issues?per_page=100&page={}>; rel=\"next\"",
                    page + 1
                ),
            );
        }
        links.push(format!(
            "<http://{host}/repos/o/r/issues?per_page=100&page=3>; rel=\"last\""
        ));
        response
            .headers_mut()
            .insert(header::LINK, links.join(", ").parse().unwrap());
        response
    });
    loads_all(
        "github",
        router,
        "/repos/o/r/issues?per_page=100",
        &["--pagination", "{kind: link_header}"],
    )
    .await;
}

/// Shopify: `{"products": [...]}` with `Link: <…?limit=100&page_info=…>; rel="next"`
/// (and `rel="previous"` from the second page on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_page_info_links() {
    let router = Router::new().fallback(|uri: Uri| async move {
        let after: u64 = query(&uri, "page_info")
            .and_then(|p| p.strip_prefix("eyJ").map(str::to_string))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let (rows, last) = records(after + 1, "gid://shopify/Product/");
        let mut response = format!("{{\"products\": [{}]}}", rows.join(",")).into_response();
        let mut links = Vec::new();
        if after > 0 {
            links.push(
                "</admin/api/2024-01/products.json?limit=100&page_info=eyJ0>; rel=\"previous\""
                    .to_string(),
            );
        }
        if last < TOTAL {
            links.push(format!(
                "</admin/api/2024-01/products.json?limit=100&page_info=eyJ{last}>; rel=\"next\""
            ));
        }
        if !links.is_empty() {
            response
                .headers_mut()
                .insert(header::LINK, links.join(", ").parse().unwrap());
        }
        response
    });
    loads_all(
        "shopify",
        router,
        "/admin/api/2024-01/products.json?limit=100",
        &[
            "--records-path",
            "/products",
            "--pagination",
            "{kind: link_header}",
        ],
    )
    .await;
}

/// Salesforce: `{"totalSize": 250, "done": false, "nextRecordsUrl": "/services/data/v58.0/query/01g-100", "records": [...]}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_next_records_url() {
    let router = Router::new().fallback(|uri: Uri| async move {
        let after: u64 = uri
            .path()
            .rsplit_once("-")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        let (rows, last) = records(after + 1, "001");
        let done = last >= TOTAL;
        let next = if done {
            String::new()
        } else {
            format!(
                ", \"nextRecordsUrl\": \"/services/data/v58.0/query/01gD0000002HU6KIAW-{last}\""
            )
        };
        format!(
            "{{\"totalSize\": {TOTAL}, \"done\": {done}{next}, \"records\": [{}]}}",
            rows.join(",")
        )
    });
    loads_all(
        "salesforce",
        router,
        "/services/data/v58.0/query?q=SELECT+Id+FROM+Account",
        &[
            "--records-path",
            "/records",
            "--pagination",
            "{kind: next_url, next_url_path: /nextRecordsUrl, done_path: /done, total_path: /totalSize}",
        ],
    )
    .await;
}

/// HubSpot: `{"results": [...], "paging": {"next": {"after": "…", "link": "…"}}}`, no
/// `paging` on the last page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_paging_next_after() {
    let router = Router::new().fallback(|uri: Uri| async move {
        let after: u64 = query(&uri, "after")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let (rows, last) = records(after + 1, "");
        let paging = if last < TOTAL {
            format!(
                ", \"paging\": {{\"next\": {{\"after\": \"{last}\", \"link\": \"?after={last}\"}}}}"
            )
        } else {
            String::new()
        };
        format!("{{\"results\": [{}]{paging}}}", rows.join(","))
    });
    loads_all(
        "hubspot",
        router,
        "/crm/v3/objects/contacts?limit=100",
        &[
            "--records-path",
            "/results",
            "--pagination",
            "{kind: cursor, cursor_param: after, cursor_path: /paging/next/after}",
        ],
    )
    .await;
}

/// Zendesk cursor pagination: `{"tickets": [...], "meta": {"has_more": true, "after_cursor": "…"}}`,
/// next page asked with `page[after]=…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_cursor_pagination() {
    let router = Router::new().fallback(|uri: Uri| async move {
        let after: u64 = query(&uri, "page[after]").and_then(|a| a.parse().ok()).unwrap_or(0);
        let (rows, last) = records(after + 1, "");
        format!(
            "{{\"tickets\": [{}], \"meta\": {{\"has_more\": {}, \"after_cursor\": \"{last}\", \"before_cursor\": \"x\"}}}}",
            rows.join(","),
            last < TOTAL
        )
    });
    loads_all(
        "zendesk",
        router,
        "/api/v2/tickets.json?page[size]=100",
        &[
            "--records-path",
            "/tickets",
            "--pagination",
            "{kind: cursor, cursor_param: 'page[after]', cursor_path: /meta/after_cursor, has_more_path: /meta/has_more}",
        ],
    )
    .await;
}

/// Airtable: `{"records": [...], "offset": "itr…/rec…"}`, no `offset` on the last page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airtable_offset() {
    let router = Router::new().fallback(|uri: Uri| async move {
        let after: u64 = query(&uri, "offset")
            .and_then(|o| o.rsplit_once("/rec").map(|(_, n)| n.to_string()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let (rows, last) = records(after + 1, "rec");
        let offset = if last < TOTAL {
            format!(", \"offset\": \"itrXYZ/rec{last}\"")
        } else {
            String::new()
        };
        format!("{{\"records\": [{}]{offset}}}", rows.join(","))
    });
    loads_all(
        "airtable",
        router,
        "/v0/appX/Table",
        &[
            "--records-path",
            "/records",
            "--pagination",
            "{kind: cursor, cursor_param: offset, cursor_path: /offset}",
        ],
    )
    .await;
}
