//! What goes into an HTTP request besides the URL: headers and query parameters, with
//! `${VAR}` taken from the environment, as in the original ApiTap's config.
//!
//! Header values are secrets as often as not (tokens, API keys), so they are never shown:
//! messages and logs name headers, not their values.

/// Headers and query parameters for every request of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
}

impl RequestOptions {
    /// Builds options from `--header 'Name: value'` and `--query name=value` flags,
    /// substituting `${VAR}` from `env`.
    ///
    /// # Errors
    /// A malformed flag, or a `${VAR}` that is not set.
    pub fn from_flags(
        headers: &[String],
        query: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<RequestOptions, String> {
        let headers = headers
            .iter()
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?} must look like 'Name: value'"))?;
                let name = name.trim();
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("--header {name:?} is not a valid header name"))?;
                let value = substitute_env(value.trim(), &env).map_err(|var| {
                    format!("environment variable {var} (in --header {name}) is not set")
                })?;
                reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                    format!("the value of --header {name} is not a valid header value")
                })?;
                Ok((name.to_string(), value))
            })
            .collect::<Result<_, String>>()?;
        let query = query
            .iter()
            .map(|q| {
                let (name, value) = q
                    .split_once('=')
                    .ok_or_else(|| format!("--query {q:?} must look like name=value"))?;
                let value = substitute_env(value, &env).map_err(|var| {
                    format!("environment variable {var} (in --query {name}) is not set")
                })?;
                Ok((name.to_string(), value))
            })
            .collect::<Result<_, String>>()?;
        Ok(RequestOptions { headers, query })
    }
}

/// Replaces every `${VAR}` in `text` with the variable's value. `$` alone stays as it is.
///
/// # Errors
/// The name of the first variable that is not set.
pub fn substitute_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
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
    fn parses_flags_and_names_what_is_wrong() {
        let o = RequestOptions::from_flags(
            &["Authorization: Bearer ${TOKEN}".into(), "X-Trace:1".into()],
            &["since=2024-01-01".into(), "key=${TOKEN}".into()],
            env,
        )
        .unwrap();
        assert_eq!(
            o.headers[0],
            ("Authorization".into(), "Bearer s3cret".into())
        );
        assert_eq!(o.headers[1], ("X-Trace".into(), "1".into()));
        assert_eq!(o.query[1], ("key".into(), "s3cret".into()));
        let err = RequestOptions::from_flags(&["X-Key: ${NOPE}".into()], &[], env).unwrap_err();
        assert_eq!(
            err,
            "environment variable NOPE (in --header X-Key) is not set"
        );
        assert!(RequestOptions::from_flags(&["no colon".into()], &[], env).is_err());
        assert!(RequestOptions::from_flags(&[], &["novalue".into()], env).is_err());
    }
}
