//! The secrets of a run, and the one redaction every output goes through.
//!
//! A credential must never reach stderr, a log line, a summary, a reject file or a state row,
//! whatever path the text took to get there: a server can echo a token in an error body, a
//! library can print a URL with its query, a panic can quote a value. So instead of hoping
//! every message was built carefully, each secret is registered once, as soon as it is known
//! (auth values, the values of headers and query parameters whose names say they are
//! credentials, URL passwords, `${VAR}` values in a POST body, OAuth tokens as they are issued,
//! values the user marks), and [`redact`] replaces every occurrence of any of them, in the
//! forms it travels in (as is, percent-encoded, form-encoded, base64 in a basic-auth header),
//! with `***` at each place text leaves the process.
//!
//! What is not a credential is not a secret: `rows=${ROWS}` in a query is a number the user
//! chose, and masking it would mask apitap's own counts. And apitap's own numbers are never
//! masked: a secret made of digits alone is masked where it stands as a value (a URL's query,
//! a header, a JSON summary's strings), but free text is not searched for it, where it could
//! not be told from a count.

use std::borrow::Cow;
use std::sync::RwLock;

use base64::Engine as _;

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

/// Shorter texts are too common to replace everywhere ("1", "ok"): URLs and headers still
/// never show them, as those are redacted by structure, but free text is not searched for them.
const MIN_SEARCHED_LEN: usize = 4;

/// Whether free text is searched for this form of a secret: not too short, and not a number,
/// which could be one of apitap's own counts.
fn searched(form: &str) -> bool {
    form.len() >= MIN_SEARCHED_LEN && !form.bytes().all(|b| b.is_ascii_digit())
}

/// Every secret (for exact matches in URLs), and those long enough to search text for.
struct Registry {
    all: Vec<String>,
    searched: Vec<String>,
}

static SECRETS: RwLock<Registry> = RwLock::new(Registry {
    all: Vec::new(),
    searched: Vec::new(),
});

/// Registers `secret`, and the forms it takes in URLs and headers.
pub(crate) fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut forms = vec![secret.to_string()];
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(encoded.clone());
    forms.push(encoded.replace('+', "%20"));
    let mut registry = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !registry.all.iter().any(|s| s == secret) {
        registry.all.push(secret.to_string());
    }
    for form in forms {
        if searched(&form) && !registry.searched.contains(&form) {
            registry.searched.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    registry
        .searched
        .sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the credentials of a basic-auth header: each part, and the header's base64.
pub(crate) fn register_basic(username: &str, password: &str) {
    register(password);
    register(&base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")));
}

/// Whether `text` is a registered secret.
pub(crate) fn is_secret(text: &str) -> bool {
    !text.is_empty()
        && SECRETS
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .iter()
            .any(|s| s == text)
}

/// `text` with every registered secret replaced by [`MASK`].
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    let registry = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let secrets = &registry.searched;
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// A URL fit for messages, logs and state: its password and the values of query parameters
/// that are secrets, or are named like credentials, hidden.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return redact(url).into_owned();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username(MASK);
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let hidden = looks_like_a_credential(&k) || is_secret(&v);
                (
                    k.into_owned(),
                    if hidden { MASK.into() } else { v.into_owned() },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    redact(parsed.as_str()).into_owned()
}

/// Header and query parameter names that say their value is a credential: `Authorization`,
/// `X-Api-Key`, `access_token`, `client_secret`, `Cookie`, `sig`…
pub(crate) fn looks_like_a_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "auth",
        "sig",
        "session",
        "cookie",
        "credential",
    ]
    .iter()
    .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_masked() {
        register("s3cr3t p@ss/word");
        register("ab");
        let text =
            "token=s3cr3t+p%40ss%2Fword url=s3cr3t%20p%40ss%2Fword plain=s3cr3t p@ss/word ab";
        assert_eq!(redact(text), "token=*** url=*** plain=*** ab");
        register_basic("ann", "hunter22");
        let basic = base64::engine::general_purpose::STANDARD.encode("ann:hunter22");
        assert_eq!(
            redact(&format!("Authorization: Basic {basic}")),
            "Authorization: Basic ***"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_numeric_secret_is_masked_as_a_value_never_in_free_text() {
        register("73194");
        assert_eq!(redact("loaded 73194 rows"), "loaded 73194 rows");
        assert_eq!(
            redact_url("https://api.example.org/v1?pin=73194&page=73194"),
            "https://api.example.org/v1?pin=***&page=***"
        );
        assert!(is_secret("73194"));
    }

    #[test]
    fn credential_names() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "access_token",
            "client_secret",
            "Cookie",
            "sig",
        ] {
            assert!(looks_like_a_credential(name), "{name}");
        }
        for name in ["rows", "page", "per_page", "X-Trace", "Accept", "since"] {
            assert!(!looks_like_a_credential(name), "{name}");
        }
    }

    #[test]
    fn urls_hide_passwords_secret_values_and_credential_names() {
        register("q-value-9");
        register("q7");
        assert_eq!(
            redact_url("https://user:pw@api.example.org/v1?api_key=k&page=2&x=q-value-9&y=q7"),
            "https://***@api.example.org/v1?api_key=***&page=2&x=***&y=***"
        );
    }
}
