//! `${VAR}` from the environment and the original ApiTap's date helpers
//! (`{{ current_date() }}`, `{{ few_date_ago(7) }}`), expanded in URLs, headers, query
//! parameters, bodies, auth settings, connection settings and table names alike.
//!
//! A value that may carry a credential is expanded with [`expand_secret`] (or [`expand_url`]),
//! which registers what the variables brought in as secrets, so no output shows them.

use super::secrets;
use super::setting::SettingError;

/// Renders the date helpers, then substitutes `${VAR}`: in that order, so a secret's value is
/// never read as a template. `what` names the value in errors.
///
/// # Errors
/// A template error, or a variable that is not set.
pub(crate) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let rendered = if text.contains("{{") || text.contains("{%") {
        render_helpers(text).map_err(|e| SettingError::invalid(what, e.to_string()))?
    } else {
        text.to_string()
    };
    substitute_env(&rendered, env, what)
}

/// Like [`expand`], for a value that may carry credentials (a header, a query parameter, a
/// body): every `${VAR}` value it takes in is registered as a secret, so no output shows it.
///
/// # Errors
/// As [`expand`].
pub(crate) fn expand_secret(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let recording = |name: &str| {
        let value = env(name);
        if let Some(value) = &value {
            secrets::register(value);
        }
        value
    };
    expand(text, &recording, what)
}

/// Expands the source URL, registering as secrets its password and the values of query
/// parameters whose names say they are credentials (`?api_key=…`, `&access_token=…`),
/// written out or from `${VAR}` alike; a host, a path or `rows=${ROWS}` is no secret.
///
/// # Errors
/// As [`expand`].
pub(crate) fn expand_url(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
    let url = expand(text, env, what)?;
    if let Ok(parsed) = reqwest::Url::parse(&url) {
        if let Some(password) = parsed.password() {
            secrets::register(password);
            if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
                secrets::register(&decoded);
            }
        }
        for (name, value) in parsed.query_pairs() {
            if secrets::looks_like_a_credential(&name) {
                secrets::register(&value);
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

/// Replaces every `${VAR}` in `text` with the variable's value. `$` alone stays as it is;
/// `what` names the value in errors.
///
/// # Errors
/// The first variable that is not set.
pub(crate) fn substitute_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    what: &str,
) -> Result<String, SettingError> {
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
        let value = env(name).ok_or_else(|| SettingError::UnsetVariable {
            var: name.to_string(),
            setting: what.to_string(),
        })?;
        out.push_str(&value);
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
            substitute_env("Bearer ${TOKEN}", env, "x").unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(
            substitute_env("a${TOKEN}b${TOKEN}", env, "x").unwrap(),
            "as3cretbs3cret"
        );
        assert_eq!(
            substitute_env("$5 and ${unclosed", env, "x").unwrap(),
            "$5 and ${unclosed"
        );
        assert_eq!(
            substitute_env("${MISSING}", env, "--query q")
                .unwrap_err()
                .to_string(),
            "environment variable MISSING (in --query q) is not set"
        );
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
}
