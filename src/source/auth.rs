//! Authentication for HTTP sources: bearer tokens, basic auth, API keys in a header or the
//! query, and OAuth2 client credentials (token fetched, cached, refreshed before it expires
//! and again on a 401).
//!
//! Secrets come from `${VAR}` and live only in memory: no message, log line or summary
//! shows them (`Debug` is redacted too).

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{SourceError, redact_url};
use crate::base::SettingError;
use crate::base::error_chain;
use crate::base::expand::substitute_env;

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyLocation {
    #[default]
    Header,
    Query,
}

/// How OAuth2 client credentials are sent to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Post,
    /// HTTP basic auth with them.
    Basic,
}

/// The `auth:` mapping (YAML config, or inline `--auth '{kind: bearer, token: ${TOKEN}}'`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum AuthConfig {
    Bearer {
        token: String,
    },
    Basic {
        username: String,
        #[serde(default)]
        password: String,
    },
    ApiKey {
        name: String,
        value: String,
        #[serde(default, rename = "in")]
        location: KeyLocation,
    },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::ApiKey { .. } => "api_key",
            AuthConfig::OAuth2 { .. } => "oauth2_client_credentials",
        };
        write!(f, "AuthConfig {{ kind: {kind}, .. }}")
    }
}

impl AuthConfig {
    /// Parses the inline mapping given to `--auth`; `${VAR}` is substituted when the load is
    /// resolved.
    ///
    /// # Errors
    /// Not such a mapping, or an unknown key or kind.
    pub(crate) fn parse(text: &str) -> Result<AuthConfig, SettingError> {
        // The text holds `${VAR}` references, not secrets, so it may be quoted in messages.
        serde_yaml::from_str(text).map_err(|e| {
            // `{` and `}` are YAML flow syntax, so an unquoted `${VAR}` breaks the mapping.
            let hint = if text.contains("${") {
                "; quote values that use ${VAR}, e.g. token: \"${API_TOKEN}\""
            } else {
                ""
            };
            SettingError::invalid(format!("--auth {text:?}"), format!("{e}{hint}"))
        })
    }

    /// Substitutes `${VAR}` in every value; `what` names where the mapping came from.
    ///
    /// # Errors
    /// A variable that is not set.
    pub(crate) fn substitute_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        what: &str,
    ) -> Result<(), SettingError> {
        let sub = |value: &mut String| -> Result<(), SettingError> {
            *value = substitute_env(value, env, what)?;
            Ok(())
        };
        match self {
            AuthConfig::Bearer { token } => sub(token)?,
            AuthConfig::Basic { username, password } => {
                sub(username)?;
                sub(password)?;
            }
            AuthConfig::ApiKey { name, value, .. } => {
                sub(name)?;
                sub(value)?;
            }
            AuthConfig::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
                ..
            } => {
                sub(token_url)?;
                sub(client_id)?;
                sub(client_secret)?;
                if let Some(scope) = scope {
                    sub(scope)?;
                }
            }
        }
        Ok(())
    }
}

impl AuthConfig {
    /// Registers every credential of the mapping as a secret (see [`crate::secrets`]).
    pub(crate) fn register_secrets(&self) {
        use crate::base::secrets::{register, register_basic};
        match self {
            AuthConfig::Bearer { token } => register(token),
            AuthConfig::Basic { username, password } => register_basic(username, password),
            AuthConfig::ApiKey { value, .. } => register(value),
            AuthConfig::OAuth2 {
                client_id,
                client_secret,
                ..
            } => {
                register(client_secret);
                register_basic(client_id, client_secret);
            }
        }
    }
}

/// Refresh a token this long before it expires, so a request never carries a stale one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Applies an [`AuthConfig`] to requests, keeping the OAuth2 token between them.
#[derive(Debug)]
pub(crate) struct Auth {
    config: AuthConfig,
    token: Mutex<Option<(String, Option<Instant>)>>,
    /// The token endpoint is retried like pages are.
    retry: super::RetryPolicy,
}

/// The most of a token endpoint's answer that is read.
const TOKEN_RESPONSE_BYTES: usize = 1 << 20;

impl Auth {
    pub(crate) fn new(config: AuthConfig, retry: super::RetryPolicy) -> Auth {
        Auth {
            config,
            token: Mutex::new(None),
            retry,
        }
    }

    /// Whether a 401 may be cured by fetching a fresh token.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self.config, AuthConfig::OAuth2 { .. })
    }

    /// Forgets the cached token, after the API refused it.
    pub(crate) async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    /// The header carrying the credentials, or `None` when they went into `url` (an API
    /// key in the query).
    ///
    /// # Errors
    /// The OAuth2 token endpoint failed.
    pub(crate) async fn credentials(
        &self,
        client: &reqwest::Client,
        url: &mut reqwest::Url,
    ) -> Result<Option<(String, String)>, SourceError> {
        let authorization = |value: String| Some(("Authorization".to_string(), value));
        Ok(match &self.config {
            AuthConfig::Bearer { token } => authorization(format!("Bearer {token}")),
            AuthConfig::Basic { username, password } => {
                let pair = format!("{username}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                authorization(format!("Basic {encoded}"))
            }
            AuthConfig::ApiKey {
                name,
                value,
                location: KeyLocation::Header,
            } => Some((name.clone(), value.clone())),
            AuthConfig::ApiKey {
                name,
                value,
                location: KeyLocation::Query,
            } => {
                // Set, not appended: a URL that came back (a redirect) may carry it already.
                let others: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != name.as_str())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(others)
                    .append_pair(name, value);
                None
            }
            AuthConfig::OAuth2 { .. } => {
                authorization(format!("Bearer {}", self.oauth2_token(client).await?))
            }
        })
    }

    async fn oauth2_token(&self, client: &reqwest::Client) -> Result<String, SourceError> {
        let AuthConfig::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
        } = &self.config
        else {
            unreachable!("only called for OAuth2");
        };
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && expires.is_none_or(|at| Instant::now() + EXPIRY_MARGIN < at)
        {
            return Ok(token.clone());
        }
        let shown = redact_url(token_url);
        let request = token_request(client_id, client_secret, scope.as_deref(), *client_auth);
        let (status, body) = self.post_token(client, token_url, &request).await?;
        if !status.is_success() {
            let reason = format!("HTTP {status}: {}", crate::base::snippet(&body));
            return Err(token_failure(&shown, reason));
        }
        let (token, expires) = read_token(&body, &shown)?;
        crate::base::secrets::register(&token);
        tracing::info!(token_url = %shown, expires_in = ?expires.map(|at| at - Instant::now()), "fetched an OAuth2 token");
        *cached = Some((token.clone(), expires));
        Ok(token)
    }

    /// Sends the token request, retrying transient failures within the source's retry
    /// policy; the answer's status and body.
    async fn post_token(
        &self,
        client: &reqwest::Client,
        token_url: &str,
        request: &TokenRequest,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), SourceError> {
        let shown = redact_url(token_url);
        let mut attempt = 1;
        loop {
            let mut post = client
                .post(token_url)
                .header(reqwest::header::ACCEPT, "application/json")
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
            if let Some(basic) = &request.basic {
                post = post.header(reqwest::header::AUTHORIZATION, basic);
            }
            let last = attempt >= self.retry.max_attempts;
            match post.body(request.form.clone()).send().await {
                Ok(response) if !last && super::retry::retryable_status(response.status()) => {
                    tracing::info!(token_url = %shown, status = response.status().as_u16(), attempt, "token endpoint failed; retrying");
                }
                Ok(response) => {
                    let status = response.status();
                    let (body, cut) =
                        super::http::read_capped(response, TOKEN_RESPONSE_BYTES).await;
                    if cut {
                        let reason = format!(
                            "the token endpoint's answer is larger than {TOKEN_RESPONSE_BYTES} bytes"
                        );
                        return Err(token_failure(&shown, reason));
                    }
                    return Ok((status, body));
                }
                Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tracing::info!(token_url = %shown, attempt, error = %error_chain(&e), "token endpoint unreachable; retrying");
                }
                Err(e) => return Err(token_failure(&shown, error_chain(&e))),
            }
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// A token that could not be had, from the token endpoint at `url` (redacted).
fn token_failure(url: &str, reason: String) -> SourceError {
    SourceError::Request {
        url: url.to_string(),
        attempts: 1,
        reason: format!("could not get an OAuth2 token: {reason}"),
    }
}

/// The form of a client-credentials token request, and the basic-auth header that carries
/// the client's credentials instead of the form when `client_auth` says so.
struct TokenRequest {
    form: String,
    basic: Option<String>,
}

fn token_request(
    client_id: &str,
    client_secret: &str,
    scope: Option<&str>,
    client_auth: ClientAuth,
) -> TokenRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    let basic = match client_auth {
        ClientAuth::Post => {
            form.append_pair("client_id", client_id);
            form.append_pair("client_secret", client_secret);
            None
        }
        ClientAuth::Basic => {
            let pair = format!("{client_id}:{client_secret}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
    };
    TokenRequest {
        form: form.finish(),
        basic,
    }
}

/// The access token of a token endpoint's answer, and when it expires. A lifetime that is
/// not a positive number, or that no clock can hold, is no expiry: the token is used until
/// the API refuses it (then fetched again, once).
fn read_token(body: &[u8], url: &str) -> Result<(String, Option<Instant>), SourceError> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: String,
        /// Seconds; any JSON, as token endpoints send numbers, strings and nonsense.
        expires_in: Option<serde_json::Value>,
    }
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        let reason = format!("the token endpoint's answer has no access_token ({e})");
        token_failure(url, reason)
    })?;
    let expires_in = parsed.expires_in.as_ref().and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let expires = expires_in
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .and_then(|d| Instant::now().checked_add(d));
    Ok((parsed.access_token, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0ken".into()),
            "SECRET" => Some("sh".into()),
            _ => None,
        }
    }

    /// Parses and substitutes, as a resolved load does.
    fn parse(text: &str) -> Result<AuthConfig, String> {
        let mut config = AuthConfig::parse(text).map_err(|e| e.to_string())?;
        config
            .substitute_env(&env, "--auth")
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn parses_every_kind_with_env_substitution() {
        assert_eq!(
            parse("{kind: bearer, token: '${TOKEN}'}").unwrap(),
            AuthConfig::Bearer {
                token: "t0ken".into()
            }
        );
        assert_eq!(
            parse("{kind: api_key, name: api_key, value: '${TOKEN}', in: query}").unwrap(),
            AuthConfig::ApiKey {
                name: "api_key".into(),
                value: "t0ken".into(),
                location: KeyLocation::Query
            }
        );
        let oauth = parse(
            "{kind: oauth2_client_credentials, token_url: 'https://idp/token', client_id: app, client_secret: '${SECRET}', scope: read}"
        )
        .unwrap();
        assert!(
            matches!(oauth, AuthConfig::OAuth2 { ref client_secret, .. } if client_secret == "sh")
        );
        assert_eq!(
            format!("{oauth:?}"),
            "AuthConfig { kind: oauth2_client_credentials, .. }"
        );
    }

    #[test]
    fn unquoted_variables_get_a_hint() {
        assert_eq!(
            parse("{kind: bearer, token: \"${TOKEN}\"}").unwrap(),
            AuthConfig::Bearer {
                token: "t0ken".into()
            }
        );
        let err = parse("{kind: bearer, token: ${TOKEN}}").unwrap_err();
        assert!(
            err.ends_with("quote values that use ${VAR}, e.g. token: \"${API_TOKEN}\""),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_keys_kinds_and_unset_variables() {
        let err = parse("{kind: bearer, tokn: x}").unwrap_err();
        assert!(err.contains("unknown field `tokn`"), "{err}");
        assert!(parse("{kind: kerberos}").is_err());
        assert_eq!(
            parse("{kind: bearer, token: '${NOPE}'}").unwrap_err(),
            "environment variable NOPE (in --auth) is not set"
        );
    }
}
