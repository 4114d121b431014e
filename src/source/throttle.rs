//! Pacing requests to what the API allows.
//!
//! One throttle is shared by every request of a source, so concurrent page fetches pace
//! together: a token bucket for a configured `rate_limit`, and a "not before" instant that a
//! 429's `Retry-After` or an exhausted `X-RateLimit-Remaining` moves forward for everyone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::base::SettingError;

/// The `rate_limit:` mapping (inline `--rate-limit '{requests_per_second: 10, burst: 5}'`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimit {
    pub requests_per_second: f64,
    /// Requests that may go at once after a quiet spell (default 1: evenly spaced).
    #[serde(default = "one")]
    pub burst: f64,
}

fn one() -> f64 {
    1.0
}

impl RateLimit {
    /// Parses the inline mapping given to `--rate-limit`; [`RateLimit::validate`] checks it
    /// when the load is resolved.
    ///
    /// # Errors
    /// Not such a mapping, or an unknown key.
    pub(crate) fn parse(text: &str) -> Result<RateLimit, SettingError> {
        serde_yaml::from_str(text)
            .map_err(|e| SettingError::invalid(format!("--rate-limit {text:?}"), e.to_string()))
    }

    /// Checks the values, whether they came from a flag or YAML; `what` names the setting.
    ///
    /// # Errors
    /// A rate that is not a positive number, or a burst below one request.
    pub(crate) fn validate(&self, what: &str) -> Result<(), SettingError> {
        let ok = self.requests_per_second > 0.0
            && self.requests_per_second.is_finite()
            && self.burst >= 1.0
            && self.burst.is_finite();
        if !ok {
            return Err(SettingError::invalid(
                what,
                "need requests_per_second > 0 and burst >= 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    not_before: Option<Instant>,
}

/// Paces the requests of one source. See the module docs.
#[derive(Debug)]
pub(crate) struct Throttle {
    limit: Option<RateLimit>,
    bucket: Mutex<Bucket>,
    /// Times a request had to wait, and 429s seen (concurrency backs off when this grows).
    waits: AtomicU64,
    rejections: AtomicU64,
}

/// The longest an exhausted rate-limit window is waited out; a reset further away is an error
/// of the API's own making, and waiting silently for hours helps no one.
const MAX_RESET_WAIT: Duration = Duration::from_secs(600);

impl Throttle {
    pub(crate) fn new(limit: Option<RateLimit>) -> Throttle {
        Throttle {
            bucket: Mutex::new(Bucket {
                tokens: limit.map_or(0.0, |l| l.burst),
                refilled: Instant::now(),
                not_before: None,
            }),
            limit,
            waits: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
        }
    }

    /// Waits until a request may go; says whether it had to wait.
    pub(crate) async fn acquire(&self) -> bool {
        let mut waited = false;
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match bucket.not_before {
                    Some(at) if at > now => Some(at - now),
                    _ => match self.limit {
                        None => None,
                        Some(limit) => {
                            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                            bucket.tokens = (bucket.tokens + elapsed * limit.requests_per_second)
                                .min(limit.burst);
                            bucket.refilled = now;
                            if bucket.tokens >= 1.0 {
                                bucket.tokens -= 1.0;
                                None
                            } else {
                                Some(Duration::from_secs_f64(
                                    (1.0 - bucket.tokens) / limit.requests_per_second,
                                ))
                            }
                        }
                    },
                }
            };
            match wait {
                None => {
                    if waited {
                        self.waits.fetch_add(1, Ordering::Relaxed);
                    }
                    return waited;
                }
                Some(wait) => {
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Holds every request back for `wait` (a 429's Retry-After, or its backoff).
    pub(crate) fn pause(&self, wait: Duration) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        self.hold_until(Instant::now() + wait);
    }

    fn hold_until(&self, at: Instant) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.not_before.is_none_or(|current| current < at) {
            bucket.not_before = Some(at);
        }
    }

    /// Reads the `X-RateLimit-Remaining` / `X-RateLimit-Reset` family (also without `X-`):
    /// when nothing remains, requests wait for the reset. Reset is either seconds from now or
    /// a Unix time, told apart by size.
    pub(crate) fn observe(&self, headers: &HeaderMap, now: SystemTime) {
        let number = |names: &[&str]| {
            names.iter().find_map(|n| {
                headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    // NaN and infinities in a header say nothing usable.
                    .filter(|v| v.is_finite())
            })
        };
        let remaining = number(&["x-ratelimit-remaining", "ratelimit-remaining"]);
        if remaining != Some(0.0) {
            return;
        }
        let Some(reset) = number(&["x-ratelimit-reset", "ratelimit-reset"]) else {
            return;
        };
        let unix_now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let seconds = if reset > 1_000_000_000.0 {
            reset - unix_now
        } else {
            reset
        };
        let wait = Duration::try_from_secs_f64(seconds.clamp(0.0, MAX_RESET_WAIT.as_secs_f64()))
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            wait_ms = wait.as_millis() as u64,
            "rate-limit window exhausted; waiting for its reset"
        );
        self.hold_until(Instant::now() + wait);
    }

    /// How many requests had to wait for the throttle.
    #[cfg(test)]
    fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// How many 429s were seen.
    pub(crate) fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_spaces_requests() {
        let throttle = Throttle::new(Some(RateLimit {
            requests_per_second: 10.0,
            burst: 2.0,
        }));
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            throttle.acquire().await;
        }
        // Two at once, then one every 100 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(390) && elapsed <= Duration::from_millis(420),
            "{elapsed:?}"
        );
        assert_eq!(throttle.waits(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_or_an_exhausted_window_holds_everyone() {
        let throttle = Throttle::new(None);
        throttle.pause(Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        throttle.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert_eq!(throttle.rejections(), 1);

        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("3"));
        throttle.observe(&headers, SystemTime::now());
        let start = tokio::time::Instant::now();
        throttle.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));

        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("5"));
        throttle.observe(&headers, SystemTime::now());
        let start = tokio::time::Instant::now();
        throttle.acquire().await;
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[test]
    fn parses_the_mapping() {
        assert_eq!(
            RateLimit::parse("{requests_per_second: 5}").unwrap(),
            RateLimit {
                requests_per_second: 5.0,
                burst: 1.0
            }
        );
        let invalid = |text: &str| {
            RateLimit::parse(text)
                .unwrap()
                .validate("--rate-limit")
                .is_err()
        };
        assert!(invalid("{requests_per_second: 0}"));
        assert!(invalid("{requests_per_second: .inf}"));
        assert!(invalid("{requests_per_second: .nan}"));
        assert!(invalid("{requests_per_second: 1, burst: 0.5}"));
        assert!(RateLimit::parse("{rps: 5}").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever a server puts in its rate-limit headers (NaN, inf, negative, huge,
        /// words), reading them neither panics nor holds requests back past the cap.
        #[test]
        fn no_rate_limit_header_panics(
            remaining in prop_oneof![Just("0".to_string()), "\\PC{0,12}"],
            reset in prop_oneof![
                Just("NaN".to_string()), Just("inf".to_string()), Just("-1e308".to_string()),
                Just("1e400".to_string()), "-?[0-9]{1,30}(\\.[0-9]{0,5})?", "\\PC{0,12}"
            ],
        ) {
            let mut h = HeaderMap::new();
            if let (Ok(r), Ok(s)) = (remaining.parse(), reset.parse()) {
                h.insert("x-ratelimit-remaining", r);
                h.insert("x-ratelimit-reset", s);
            }
            let throttle = Throttle::new(None);
            throttle.observe(&h, SystemTime::now());
        }
    }
}
