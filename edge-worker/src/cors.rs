//! CORS: which browser origins may send to a project, and the headers that say so.
//!
//! A project's allowed origins come with its key ([`KeyLookupResponse::allows_origin`]); an empty
//! list allows every origin. A refused origin gets no `Access-Control-Allow-Origin` at all.

use protocol::forward::KeyLookupResponse;

/// Methods a browser may use on the batch endpoint.
pub const ALLOW_METHODS: &str = "POST, OPTIONS";
/// Request headers a browser may send to the batch endpoint.
pub const ALLOW_HEADERS: &str = "content-type, content-encoding, x-nexus-key";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE: &str = "86400";
/// Response headers a browser script may read (the SDK honours `Retry-After`).
pub const EXPOSE_HEADERS: &str = "retry-after";

/// The CORS verdict for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a browser cross-origin request, no CORS headers.
    NotCors,
    /// The origin may read the answer; carries the origin to echo.
    Allowed(String),
    /// The origin is not among the project's allowed origins.
    Refused,
}

/// Judges the request's `Origin` header against the project.
pub fn verdict(origin: Option<&str>, project: &KeyLookupResponse) -> Verdict {
    match origin.map(str::trim).filter(|o| !o.is_empty()) {
        None => Verdict::NotCors,
        Some(o) if project.allows_origin(o) => Verdict::Allowed(o.to_owned()),
        Some(_) => Verdict::Refused,
    }
}

/// Headers of the 204 answer to an allowed preflight.
pub fn preflight_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-allow-methods", ALLOW_METHODS.to_owned()),
        ("access-control-allow-headers", ALLOW_HEADERS.to_owned()),
        ("access-control-max-age", MAX_AGE.to_owned()),
        ("vary", "Origin".to_owned()),
    ]
}

/// Headers added to every answer (success or error) to a POST from an allowed origin.
pub fn response_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-expose-headers", EXPOSE_HEADERS.to_owned()),
        ("vary", "Origin".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(origins: &[&str]) -> KeyLookupResponse {
        KeyLookupResponse {
            project_id: 1,
            revoked: false,
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn check(origins: &[&str], origin: Option<&str>, expected: Verdict) {
        assert_eq!(verdict(origin, &project(origins)), expected, "{origins:?} {origin:?}");
    }

    #[test]
    fn table() {
        let allowed = |o: &str| Verdict::Allowed(o.to_owned());
        check(&[], None, Verdict::NotCors);
        check(&["https://a.test"], Some(""), Verdict::NotCors);
        check(&[], Some("https://any.test"), allowed("https://any.test"));
        check(&["https://a.test"], Some("https://a.test"), allowed("https://a.test"));
        check(&["https://a.test"], Some("https://A.test"), allowed("https://A.test"));
        check(&["https://a.test"], Some("https://b.test"), Verdict::Refused);
        check(&["https://a.test"], Some("https://a.test.evil.test"), Verdict::Refused);
        check(&["https://a.test"], Some("null"), Verdict::Refused);
        check(&["https://a.test", "*"], Some("https://b.test"), allowed("https://b.test"));
    }

    #[test]
    fn headers() {
        let h = preflight_headers("https://a.test");
        assert!(h.contains(&("access-control-allow-origin", "https://a.test".to_owned())));
        assert!(h.contains(&("access-control-max-age", "86400".to_owned())));
        assert!(h.contains(&("vary", "Origin".to_owned())));
        let h = response_headers("https://a.test");
        assert!(h.contains(&("access-control-allow-origin", "https://a.test".to_owned())));
        assert!(h.contains(&("vary", "Origin".to_owned())));
    }
}
