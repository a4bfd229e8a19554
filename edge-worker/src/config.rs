//! Worker configuration (vars and secrets), read through a lookup function so it tests natively.

/// The origin's base URL (`https://origin.example.com`), a plain var.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
/// Shared HMAC secret for edge -> origin requests, a secret.
pub const ORIGIN_SECRET: &str = "ORIGIN_SECRET";
/// Salt of the visitor hash, a secret.
pub const VISITOR_SALT: &str = "VISITOR_SALT";
/// Optional path prefix stripped before routing (`/nx`), a plain var.
pub const PATH_PREFIX: &str = "PATH_PREFIX";

/// Why the worker cannot serve batches with its current configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required var or secret is missing or empty.
    #[error("required binding {0} is not set")]
    Missing(&'static str),
    /// `ORIGIN_URL` is not an http(s) URL.
    #[error("binding ORIGIN_URL must start with http:// or https://")]
    InvalidOriginUrl,
}

/// Everything the batch route needs from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Origin base URL without a trailing slash.
    pub origin_url: String,
    /// HMAC secret shared with the origin.
    pub origin_secret: String,
    /// Visitor-hash salt; `None` leaves events without a visitor hash (a warning is logged).
    pub visitor_salt: Option<String>,
}

// Secrets must never reach a log line through a derived Debug.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("origin_url", &self.origin_url)
            .field("origin_secret", &"<redacted>")
            .field("visitor_salt", &self.visitor_salt.as_ref().map(|_| "<redacted>"))
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
        Ok(Config {
            origin_url: origin_url.trim_end_matches('/').to_owned(),
            origin_secret: get(ORIGIN_SECRET).ok_or(ConfigError::Missing(ORIGIN_SECRET))?,
            visitor_salt: get(VISITOR_SALT),
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
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pepper"), "{dbg}");
        assert_eq!(c.origin_endpoint("/internal/v1/ingest"), "https://o.test/internal/v1/ingest");
    }
}
