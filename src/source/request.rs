//! What goes into an HTTP request besides the URL: method, headers, query parameters and a
//! JSON body, with `${VAR}` taken from the environment and the original ApiTap's date helpers
//! (`{{ current_date() }}`, `{{ few_date_ago(7) }}`).
//!
//! Header values are secrets as often as not (tokens, API keys), so they are never shown:
//! messages and logs name headers, not their values.

use crate::request::{Origin, Setting, SettingError};

/// Method, headers, query parameters and body for every request of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
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
    pub fn build(
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
                let value = expand_secret(value.trim(), env, &what)?;
                reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| SettingError::invalid(&what, "not a valid header value"))?;
                Ok((name.to_string(), value))
            })
            .collect::<Result<_, SettingError>>()?;
        let query_setting = Setting::Query.name(origin);
        let query = query
            .iter()
            .map(|(name, value)| {
                let value = expand_secret(value, env, &format!("{query_setting} {name}"))?;
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
    pub fn with_post_body(
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

/// Renders the date helpers, then substitutes `${VAR}`: in that order, so a secret's value is
/// never read as a template. `what` names the value in errors.
///
/// # Errors
/// A template error, or a variable that is not set.
pub fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let rendered = if text.contains("{{") || text.contains("{%") {
        render_helpers(text).map_err(|e| SettingError::invalid(what, e.to_string()))?
    } else {
        text.to_string()
    };
    substitute_env(&rendered, env).map_err(|var| SettingError::UnsetVariable {
        var,
        setting: what.to_string(),
    })
}

/// Like [`expand`], for a value that may carry credentials (a header, a query parameter, a
/// body): every `${VAR}` value it takes in is registered as a secret, so no output shows it.
///
/// # Errors
/// As [`expand`].
pub fn expand_secret(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let recording = |name: &str| {
        let value = env(name);
        if let Some(value) = &value {
            crate::secrets::register(value);
        }
        value
    };
    expand(text, &recording, what)
}

/// Expands the source URL, registering as secrets the `${VAR}` values that land in its
/// password or its query (where API keys travel), but not those that name a host or a path.
///
/// # Errors
/// As [`expand`].
pub fn expand_url(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let used = std::cell::RefCell::new(Vec::new());
    let recording = |name: &str| {
        let value = env(name);
        if let Some(value) = &value {
            used.borrow_mut().push(value.clone());
        }
        value
    };
    let url = expand(text, &recording, what)?;
    if let Ok(parsed) = reqwest::Url::parse(&url) {
        if let Some(password) = parsed.password() {
            crate::secrets::register(password);
        }
        let query: Vec<String> = parsed.query_pairs().map(|(_, v)| v.into_owned()).collect();
        for value in used.into_inner() {
            if query.iter().any(|q| q.contains(&value)) {
                crate::secrets::register(&value);
            }
        }
    }
    Ok(url)
}

/// `{{ current_date() }}` is today (UTC) as `YYYY-MM-DD`; `{{ few_date_ago(N) }}` is N days
/// before it. The original ApiTap's helpers, for incremental query parameters and modules.
pub(crate) fn add_date_helpers(templates: &mut minijinja::Environment<'_>) {
    let today = chrono::Utc::now().date_naive();
    templates.add_function("current_date", move || today.format("%Y-%m-%d").to_string());
    templates.add_function("few_date_ago", move |days: i64| {
        (today - chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    });
}

fn render_helpers(text: &str) -> Result<String, minijinja::Error> {
    let mut templates = minijinja::Environment::new();
    add_date_helpers(&mut templates);
    templates.render_str(text, ())
}

/// Replaces every `${VAR}` in `text` with the variable's value. `$` alone stays as it is.
///
/// # Errors
/// The name of the first variable that is not set.
pub(crate) fn substitute_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(
            substitute_env("Bearer ${TOKEN}", env).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(
            substitute_env("a${TOKEN}b${TOKEN}", env).unwrap(),
            "as3cretbs3cret"
        );
        assert_eq!(
            substitute_env("$5 and ${unclosed", env).unwrap(),
            "$5 and ${unclosed"
        );
        assert_eq!(substitute_env("${MISSING}", env).unwrap_err(), "MISSING");
    }

    #[test]
    fn date_helpers_render_before_variables() {
        let today = chrono::Utc::now().date_naive();
        let week_ago = (today - chrono::Duration::days(7))
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(
            expand("{{ few_date_ago(7) }}..{{ current_date() }}", &env, "x").unwrap(),
            format!("{week_ago}..{}", today.format("%Y-%m-%d"))
        );
        assert_eq!(
            expand("${TOKEN}", &|_| Some("{{ x }}".into()), "x").unwrap(),
            "{{ x }}"
        );
        assert!(
            expand("{{ nope( }}", &env, "--query q")
                .unwrap_err()
                .to_string()
                .starts_with("--query q: ")
        );
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
