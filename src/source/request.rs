//! What goes into an HTTP request besides the URL: method, headers, query parameters and a
//! JSON body, with `${VAR}` taken from the environment and the original ApiTap's date helpers
//! (`{{ current_date() }}`, `{{ few_date_ago(7) }}`).
//!
//! Header values are never shown: messages and logs name headers, not their values. Those of
//! headers and query parameters whose names say they are credentials (`Authorization`,
//! `X-Api-Key`, `access_token`…) are registered as secrets, so no output shows them either,
//! whatever carries them out (a server's error body, a library's message).

use crate::base::expand::{expand, expand_secret};
use crate::base::secrets::{self, looks_like_a_credential};
use crate::base::{Origin, Setting, SettingError};

/// `value` with `${VAR}` expanded: for a credential (by its `name`), registered as a secret
/// whole, and so are its variables' values and its last word (the token of `Bearer TOKEN`).
fn expand_value(
    name: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    if !looks_like_a_credential(name) {
        return expand(value, env, what);
    }
    let value = expand_secret(value, env, what)?;
    secrets::register(&value);
    if let Some(last) = value.split_whitespace().last() {
        secrets::register(last);
    }
    Ok(value)
}

/// Method, headers, query parameters and body for every request of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestOptions {
    pub post: bool,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// JSON sent with a POST.
    pub body: Option<String>,
}

impl RequestOptions {
    /// Builds options from header and query (name, value) pairs as written, substituting
    /// `${VAR}` from `env`; `origin` names the settings in messages.
    ///
    /// # Errors
    /// A header name or value HTTP cannot carry, or a `${VAR}` that is not set.
    pub(crate) fn build(
        headers: &[(String, String)],
        query: &[(String, String)],
        origin: Origin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RequestOptions, SettingError> {
        let header_setting = Setting::Header.name(origin);
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = name.trim();
                let what = format!("{header_setting} {name}");
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| SettingError::invalid(&what, "not a valid header name"))?;
                let value = expand_value(name, value.trim(), env, &what)?;
                reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| SettingError::invalid(&what, "not a valid header value"))?;
                Ok((name.to_string(), value))
            })
            .collect::<Result<_, SettingError>>()?;
        let query_setting = Setting::Query.name(origin);
        let query = query
            .iter()
            .map(|(name, value)| {
                let value = expand_value(name, value, env, &format!("{query_setting} {name}"))?;
                Ok((name.to_string(), value))
            })
            .collect::<Result<_, SettingError>>()?;
        Ok(RequestOptions {
            headers,
            query,
            ..RequestOptions::default()
        })
    }

    /// Sends POST requests with `body` (JSON, expanded like the other values).
    ///
    /// # Errors
    /// A body that is not JSON once expanded, or a variable that is not set.
    pub(crate) fn with_post_body(
        mut self,
        body: Option<&str>,
        origin: Origin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RequestOptions, SettingError> {
        self.post = true;
        if let Some(body) = body {
            let what = Setting::Body.name(origin);
            let body = expand_secret(body, env, what)?;
            serde_json::from_str::<serde::de::IgnoredAny>(&body)
                .map_err(|e| SettingError::invalid(what, format!("not JSON: {e}")))?;
            self.body = Some(body);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn builds_options_and_names_what_is_wrong() {
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        let o = RequestOptions::build(
            &[
                pair("Authorization", "Bearer ${TOKEN}"),
                pair("X-Trace", "1"),
            ],
            &[pair("since", "2024-01-01"), pair("key", "${TOKEN}")],
            Origin::Flags,
            &env,
        )
        .unwrap();
        assert_eq!(
            o.headers[0],
            ("Authorization".into(), "Bearer s3cret".into())
        );
        assert_eq!(o.headers[1], ("X-Trace".into(), "1".into()));
        assert_eq!(o.query[1], ("key".into(), "s3cret".into()));
        let err = RequestOptions::build(&[pair("X-Key", "${NOPE}")], &[], Origin::Flags, &env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable NOPE (in --header X-Key) is not set"
        );
        let err =
            RequestOptions::build(&[pair("X Key", "1")], &[], Origin::Yaml, &env).unwrap_err();
        assert_eq!(err.to_string(), "headers X Key: not a valid header name");
    }
}
