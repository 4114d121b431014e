//! When and how long to wait before asking an HTTP server again.
//!
//! Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with
//! exponential backoff and jitter; a server's `Retry-After` (seconds or an HTTP date) wins over
//! the backoff, since asking earlier only earns another 429.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

use crate::base::SettingError;

/// The longest backoff a policy may ask for: an hour.
const MAX_DELAY_SECS: f64 = 3600.0;

/// The `retry:` mapping of the original ApiTap's config, all keys optional here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetryPolicy {
    /// Tries in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    pub min_delay_secs: f64,
    pub max_delay_secs: f64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            min_delay_secs: 0.5,
            max_delay_secs: 30.0,
        }
    }
}

/// The longest `Retry-After` honoured; a server asking for more fails the load instead of
/// stalling it silently.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// `Retry-After: 0` means "now", but never a hot loop.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

impl RetryPolicy {
    /// Parses the inline YAML (or JSON) mapping given to `--retry`; [`RetryPolicy::validate`]
    /// checks it when the load is resolved.
    ///
    /// # Errors
    /// Text that is not such a mapping, or an unknown key.
    pub(crate) fn parse(text: &str) -> Result<RetryPolicy, SettingError> {
        serde_yaml::from_str(text)
            .map_err(|e| SettingError::invalid(format!("--retry {text:?}"), e.to_string()))
    }

    /// Checks that the values make sense, whether they came from a flag or YAML; `what`
    /// names the setting.
    ///
    /// # Errors
    /// No attempt at all, or delays that are negative, not numbers, or out of order.
    pub(crate) fn validate(&self, what: &str) -> Result<(), SettingError> {
        let ok = self.max_attempts >= 1
            && self.min_delay_secs >= 0.0
            && self.min_delay_secs <= self.max_delay_secs
            && self.max_delay_secs <= MAX_DELAY_SECS;
        if !ok {
            return Err(SettingError::invalid(
                what,
                "need max_attempts >= 1 and 0 <= min_delay_secs <= max_delay_secs <= 3600",
            ));
        }
        Ok(())
    }

    /// The backoff before try `attempt + 1` (attempts count from 1): doubling from the
    /// minimum, capped, with "equal jitter" (half fixed, half random) so that many clients
    /// do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.min_delay_secs * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let base = exp.min(self.max_delay_secs).max(0.0);
        Duration::from_secs_f64(base / 2.0 + base / 2.0 * random_unit())
    }
}

/// A number in [0, 1) that differs between processes and calls; good enough for jitter.
fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a response status is worth another try.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// What the server asked for in `Retry-After`, if anything usable.
///
/// # Errors
/// A wait longer than apitap is willing to sit through, with the wait asked for.
pub(crate) fn retry_after(
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Option<Duration>, Duration> {
    let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(at) = httpdate::parse_http_date(value) {
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        return Ok(None);
    };
    if wait > MAX_RETRY_AFTER {
        return Err(wait);
    }
    Ok(Some(wait.max(MIN_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("7"), now),
            Ok(Some(Duration::from_secs(7)))
        );
        assert_eq!(retry_after(&headers("0"), now), Ok(Some(MIN_RETRY_AFTER)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&date), now),
            Ok(Some(Duration::from_secs(30)))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&past), now), Ok(Some(MIN_RETRY_AFTER)));
        assert_eq!(retry_after(&headers("soon"), now), Ok(None));
        assert_eq!(retry_after(&HeaderMap::new(), now), Ok(None));
        assert_eq!(
            retry_after(&headers("3600"), now),
            Err(Duration::from_secs(3600))
        );
    }

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            min_delay_secs: 1.0,
            max_delay_secs: 8.0,
        };
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)] {
            let d = p.backoff(attempt).as_secs_f64();
            assert!(d >= base / 2.0 && d <= base, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn parses_the_original_config_mapping() {
        assert_eq!(
            RetryPolicy::parse("{max_attempts: 3, min_delay_secs: 1, max_delay_secs: 10}").unwrap(),
            RetryPolicy {
                max_attempts: 3,
                min_delay_secs: 1.0,
                max_delay_secs: 10.0
            }
        );
        assert_eq!(
            RetryPolicy::parse("{max_attempts: 2}")
                .unwrap()
                .max_delay_secs,
            30.0
        );
        assert!(
            RetryPolicy::parse("{max_tries: 2}")
                .unwrap_err()
                .to_string()
                .contains("unknown field `max_tries`")
        );
        let invalid = |text: &str| {
            RetryPolicy::parse(text)
                .unwrap()
                .validate("--retry")
                .is_err()
        };
        assert!(invalid("{max_attempts: 0}"));
        assert!(invalid("{min_delay_secs: 5, max_delay_secs: 1}"));
        assert!(invalid("{min_delay_secs: -1}"));
        assert!(invalid("{max_delay_secs: .nan}"));
        assert!(invalid("{max_delay_secs: 1e300}"));
        assert!(!invalid("{max_attempts: 1}"));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_retry_after_value_panics(value in "\\PC{0,40}") {
            if let Ok(v) = HeaderValue::from_str(&value) {
                let mut h = HeaderMap::new();
                h.insert(RETRY_AFTER, v);
                let _ = retry_after(&h, SystemTime::now());
            }
        }
    }
}
