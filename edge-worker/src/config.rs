//! Worker configuration (vars and secrets), read through a lookup function so it tests natively.

use crate::delivery::{DeliveryMode, DEFAULT_RETRY_DELAY_SECS, MAX_RETRY_DELAY_SECS};

/// The origin's base URL (`https://origin.example.com`), a plain var.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
/// Shared HMAC secret for edge -> origin requests, a secret.
pub const ORIGIN_SECRET: &str = "ORIGIN_SECRET";
/// Fixed salt of the visitor hash, a secret: only used without the `SALTS` Durable Object.
pub const VISITOR_SALT: &str = "VISITOR_SALT";
/// Default events-per-minute quota of a project whose key lookup names none, a plain var.
pub const EVENTS_PER_MINUTE: &str = "EVENTS_PER_MINUTE";
/// Test mode (`1`): honours the test-only `x-nexus-test-day` header. Never set in production.
pub const NEXUS_TEST_MODE: &str = "NEXUS_TEST_MODE";
/// Durable Object namespace of the daily visitor salts.
pub const SALTS_BINDING: &str = "SALTS";
/// Durable Object namespace of the per-project event quotas.
pub const QUOTAS_BINDING: &str = "QUOTAS";
/// Optional path prefix stripped before routing (`/nx`), a plain var.
pub const PATH_PREFIX: &str = "PATH_PREFIX";
/// `direct` (default) or `queue`, a plain var.
pub const DELIVERY_MODE: &str = "DELIVERY_MODE";
/// Seconds before a failed queue delivery is retried, a plain var.
pub const RETRY_DELAY_SECS: &str = "RETRY_DELAY_SECS";
/// Name of the dead-letter queue (the consumer tells its two queues apart by name), a plain var.
pub const DEAD_LETTER_QUEUE: &str = "DEAD_LETTER_QUEUE";
/// Bearer secret of the admin routes (dead letters, re-drive), a secret; unset: routes off.
pub const ADMIN_SECRET: &str = "ADMIN_SECRET";
/// Producer binding of the delivery queue.
pub const DELIVERY_BINDING: &str = "DELIVERY";
/// Producer binding of the dead-letter queue.
pub const DEAD_LETTERS_BINDING: &str = "DEAD_LETTERS";
/// Durable Object namespace that keeps dead letters until a re-drive.
pub const DEAD_LETTER_STORE_BINDING: &str = "DEAD_LETTER_STORE";
/// Default name of the dead-letter queue.
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "nexus-delivery-dlq";

/// Why the worker cannot serve batches with its current configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required var or secret is missing or empty.
    #[error("required binding {0} is not set")]
    Missing(&'static str),
    /// `ORIGIN_URL` is not an http(s) URL.
    #[error("binding ORIGIN_URL must start with http:// or https://")]
    InvalidOriginUrl,
    /// A numeric var is not a whole number.
    #[error("binding {0} must be a whole number")]
    InvalidNumber(&'static str),
    /// `DELIVERY_MODE` is neither `direct` nor `queue`.
    #[error("binding DELIVERY_MODE must be direct or queue")]
    InvalidMode,
}

/// Everything the batch route needs from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Origin base URL without a trailing slash.
    pub origin_url: String,
    /// HMAC secret shared with the origin.
    pub origin_secret: String,
    /// Fixed visitor-hash salt, the fallback without the `SALTS` object; `None` leaves events
    /// without a visitor hash (a warning is logged).
    pub visitor_salt: Option<String>,
    /// Default per-project quota in events per minute; `None`: no quota unless the key has one.
    pub events_per_minute: Option<u64>,
    /// Test mode: the `x-nexus-test-day` header moves the request's day.
    pub test_mode: bool,
    /// How accepted events reach the origin.
    pub delivery: DeliveryMode,
    /// Seconds before a failed queue delivery is retried.
    pub retry_delay_secs: u32,
    /// Name of the dead-letter queue.
    pub dead_letter_queue: String,
    /// Bearer secret of the admin routes; `None`: they answer 404.
    pub admin_secret: Option<String>,
}

// Secrets must never reach a log line through a derived Debug.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("origin_url", &self.origin_url)
            .field("origin_secret", &"<redacted>")
            .field("visitor_salt", &self.visitor_salt.as_ref().map(|_| "<redacted>"))
            .field("events_per_minute", &self.events_per_minute)
            .field("test_mode", &self.test_mode)
            .field("delivery", &self.delivery)
            .field("retry_delay_secs", &self.retry_delay_secs)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("admin_secret", &self.admin_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Config {
    /// Reads the configuration through `lookup` (binding name -> string value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let origin_url = get(ORIGIN_URL).ok_or(ConfigError::Missing(ORIGIN_URL))?;
        if !(origin_url.starts_with("http://") || origin_url.starts_with("https://")) {
            return Err(ConfigError::InvalidOriginUrl);
        }
        let events_per_minute = match get(EVENTS_PER_MINUTE) {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| ConfigError::InvalidNumber(EVENTS_PER_MINUTE))?),
        };
        let delivery = DeliveryMode::parse(get(DELIVERY_MODE).as_deref()).ok_or(ConfigError::InvalidMode)?;
        let retry_delay_secs = match get(RETRY_DELAY_SECS) {
            None => DEFAULT_RETRY_DELAY_SECS,
            Some(v) => {
                v.parse::<u32>().map_err(|_| ConfigError::InvalidNumber(RETRY_DELAY_SECS))?.min(MAX_RETRY_DELAY_SECS)
            }
        };
        Ok(Config {
            origin_url: origin_url.trim_end_matches('/').to_owned(),
            origin_secret: get(ORIGIN_SECRET).ok_or(ConfigError::Missing(ORIGIN_SECRET))?,
            visitor_salt: get(VISITOR_SALT),
            events_per_minute,
            test_mode: crate::salt::test_mode(get(NEXUS_TEST_MODE).as_deref()),
            delivery,
            retry_delay_secs,
            dead_letter_queue: get(DEAD_LETTER_QUEUE).unwrap_or_else(|| DEFAULT_DEAD_LETTER_QUEUE.to_owned()),
            admin_secret: get(ADMIN_SECRET),
        })
    }

    /// Full URL of an origin path (`/internal/v1/ingest`).
    pub fn origin_endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.origin_url)
    }
}

/// Normalises `PATH_PREFIX`: `""`, `"/"` -> `""`; `"nx/"` -> `"/nx"`.
pub fn path_prefix(raw: Option<&str>) -> String {
    let trimmed = raw.unwrap_or("").trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], expected: Result<(&str, Option<&str>), ConfigError>) {
        let got = Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()));
        let got = got.as_ref().map(|c| (c.origin_url.as_str(), c.visitor_salt.as_deref())).map_err(Clone::clone);
        assert_eq!(got, expected, "{vars:?}");
    }

    #[test]
    fn table() {
        let url = ("ORIGIN_URL", "https://o.test/");
        let secret = ("ORIGIN_SECRET", "s");
        check(&[url, secret, ("VISITOR_SALT", "x")], Ok(("https://o.test", Some("x"))));
        check(&[url, secret], Ok(("https://o.test", None)));
        check(&[url, secret, ("VISITOR_SALT", " ")], Ok(("https://o.test", None)));
        check(&[secret], Err(ConfigError::Missing(ORIGIN_URL)));
        check(&[url], Err(ConfigError::Missing(ORIGIN_SECRET)));
        check(&[url, ("ORIGIN_SECRET", "")], Err(ConfigError::Missing(ORIGIN_SECRET)));
        check(&[("ORIGIN_URL", "o.test"), secret], Err(ConfigError::InvalidOriginUrl));
        check(&[url, secret, ("EVENTS_PER_MINUTE", "many")], Err(ConfigError::InvalidNumber(EVENTS_PER_MINUTE)));
        check(&[url, secret, ("EVENTS_PER_MINUTE", "-5")], Err(ConfigError::InvalidNumber(EVENTS_PER_MINUTE)));
        check(&[url, secret, ("DELIVERY_MODE", "later")], Err(ConfigError::InvalidMode));
        check(&[url, secret, ("RETRY_DELAY_SECS", "x")], Err(ConfigError::InvalidNumber(RETRY_DELAY_SECS)));
    }

    #[test]
    fn quota_and_test_mode() {
        let read = |vars: &[(&str, &str)]| {
            let base = [("ORIGIN_URL", "https://o.test"), ("ORIGIN_SECRET", "s")];
            let c = Config::from_lookup(|name| {
                base.iter().chain(vars).find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
            })
            .unwrap();
            (c.events_per_minute, c.test_mode)
        };
        assert_eq!(read(&[]), (None, false));
        assert_eq!(read(&[("EVENTS_PER_MINUTE", " 6000 "), ("NEXUS_TEST_MODE", "1")]), (Some(6000), true));
        assert_eq!(read(&[("EVENTS_PER_MINUTE", ""), ("NEXUS_TEST_MODE", "0")]), (None, false));
        let full = |vars: &[(&str, &str)]| {
            let base = [("ORIGIN_URL", "https://o.test"), ("ORIGIN_SECRET", "s")];
            Config::from_lookup(|name| base.iter().chain(vars).find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
                .unwrap()
        };
        let c = full(&[]);
        assert_eq!(
            (c.delivery, c.retry_delay_secs, c.dead_letter_queue.as_str()),
            (DeliveryMode::Direct, 300, "nexus-delivery-dlq")
        );
        let c = full(&[("DELIVERY_MODE", "queue"), ("RETRY_DELAY_SECS", "999999"), ("DEAD_LETTER_QUEUE", "dlq")]);
        assert_eq!(
            (c.delivery, c.retry_delay_secs, c.dead_letter_queue.as_str()),
            (DeliveryMode::Queue, 43_200, "dlq")
        );
    }

    #[test]
    fn prefixes_and_debug() {
        let cases = [
            (None, ""),
            (Some(""), ""),
            (Some("/"), ""),
            (Some("/nx"), "/nx"),
            (Some("nx/"), "/nx"),
            (Some(" /a/b/ "), "/a/b"),
        ];
        for (raw, expected) in cases {
            assert_eq!(path_prefix(raw), expected, "{raw:?}");
        }
        let c = Config {
            origin_url: "https://o.test".into(),
            origin_secret: "hunter2".into(),
            visitor_salt: Some("pepper".into()),
            events_per_minute: None,
            test_mode: false,
            delivery: DeliveryMode::Direct,
            retry_delay_secs: 1,
            dead_letter_queue: DEFAULT_DEAD_LETTER_QUEUE.into(),
            admin_secret: Some("letmein".into()),
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pepper") && !dbg.contains("letmein"), "{dbg}");
        assert_eq!(c.origin_endpoint("/internal/v1/ingest"), "https://o.test/internal/v1/ingest");
    }
}
