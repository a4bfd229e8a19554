//! The routing table: method and path (after the optional `PATH_PREFIX`) to a [`Route`].

use protocol::BATCH_PATH;

/// One event per request (`POST`), same body rules as the batch.
pub const TRACK_PATH: &str = "/v1/track";
/// The no-JavaScript page-view pixel (`GET`).
pub const PIXEL_PATH: &str = "/v1/p.gif";
/// Path of the liveness probe.
pub const HEALTH_PATH: &str = "/health";
/// Admin: list the dead letters (`GET`, bearer `ADMIN_SECRET`).
pub const DEAD_LETTERS_PATH: &str = "/admin/v1/dead-letters";
/// Admin: put the dead letters back on the delivery queue (`POST`, bearer `ADMIN_SECRET`).
pub const REDRIVE_PATH: &str = "/admin/v1/redrive";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/batch`: ingest a batch.
    Batch,
    /// `OPTIONS /v1/batch` or `OPTIONS /v1/track`: CORS preflight.
    Preflight,
    /// `POST /v1/track`: ingest one event.
    Track,
    /// `GET /v1/p.gif`: a page view from query parameters, answered with a GIF.
    Pixel,
    /// `GET /health`.
    Health,
    /// `GET /admin/v1/dead-letters`.
    DeadLetters,
    /// `POST /admin/v1/redrive`.
    Redrive,
    /// No such path (or the path lacks the configured prefix).
    NotFound,
    /// Known path, wrong method; `allow` is the `Allow` header value.
    MethodNotAllowed {
        /// Methods the path accepts.
        allow: &'static str,
    },
}

/// Routes a request. `prefix` is already normalised ([`crate::config::path_prefix`]).
pub fn route(method: &str, path: &str, prefix: &str) -> Route {
    let Some(path) = strip_prefix(path, prefix) else {
        return Route::NotFound;
    };
    match (path, method.to_ascii_uppercase().as_str()) {
        (BATCH_PATH, "POST") => Route::Batch,
        (TRACK_PATH, "POST") => Route::Track,
        (BATCH_PATH | TRACK_PATH, "OPTIONS") => Route::Preflight,
        (BATCH_PATH | TRACK_PATH, _) => Route::MethodNotAllowed { allow: "POST, OPTIONS" },
        (PIXEL_PATH, "GET") => Route::Pixel,
        (PIXEL_PATH, _) => Route::MethodNotAllowed { allow: "GET" },
        (HEALTH_PATH, "GET" | "HEAD") => Route::Health,
        (HEALTH_PATH, _) => Route::MethodNotAllowed { allow: "GET, HEAD" },
        (DEAD_LETTERS_PATH, "GET") => Route::DeadLetters,
        (DEAD_LETTERS_PATH, _) => Route::MethodNotAllowed { allow: "GET" },
        (REDRIVE_PATH, "POST") => Route::Redrive,
        (REDRIVE_PATH, _) => Route::MethodNotAllowed { allow: "POST" },
        _ => Route::NotFound,
    }
}

/// The first value of query parameter `name` in a serialised URL, form-decoded (`+` is a space,
/// `%XX` a byte, invalid UTF-8 replaced). Hand-written so the worker does not link a URL parser.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex_val), bytes.get(i + 2).and_then(hex_val)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `path` without `prefix`, matching whole segments only (`/nx/v1` yes, `/nxv1` no).
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(prefix)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, prefix: &str, expected: Route) {
        assert_eq!(route(method, path, prefix), expected, "{method} {path} (prefix {prefix:?})");
    }

    #[test]
    fn table() {
        let batch_405 = Route::MethodNotAllowed { allow: "POST, OPTIONS" };
        check("POST", "/v1/batch", "", Route::Batch);
        check("post", "/v1/batch", "", Route::Batch);
        check("OPTIONS", "/v1/batch", "", Route::Preflight);
        check("POST", "/v1/track", "", Route::Track);
        check("OPTIONS", "/v1/track", "", Route::Preflight);
        check("GET", "/v1/track", "", batch_405);
        check("GET", "/v1/p.gif", "", Route::Pixel);
        check("get", "/v1/p.gif", "", Route::Pixel);
        check("POST", "/v1/p.gif", "", Route::MethodNotAllowed { allow: "GET" });
        check("HEAD", "/v1/p.gif", "", Route::MethodNotAllowed { allow: "GET" });
        check("GET", "/nx/v1/p.gif", "/nx", Route::Pixel);
        check("POST", "/nx/v1/track", "/nx", Route::Track);
        check("GET", "/v1/p.gif", "/nx", Route::NotFound);
        check("GET", "/v1/p.gif/", "", Route::NotFound);
        check("GET", "/v1/batch", "", batch_405);
        check("PUT", "/v1/batch", "", batch_405);
        check("GET", "/health", "", Route::Health);
        check("HEAD", "/health", "", Route::Health);
        check("POST", "/health", "", Route::MethodNotAllowed { allow: "GET, HEAD" });
        check("GET", "/admin/v1/dead-letters", "", Route::DeadLetters);
        check("POST", "/admin/v1/redrive", "", Route::Redrive);
        check("GET", "/admin/v1/redrive", "", Route::MethodNotAllowed { allow: "POST" });
        check("POST", "/v1/batch/", "", Route::NotFound);
        check("POST", "/v2/batch", "", Route::NotFound);
        check("GET", "/", "", Route::NotFound);
        check("POST", "/nx/v1/batch", "/nx", Route::Batch);
        check("GET", "/nx/health", "/nx", Route::Health);
        check("POST", "/v1/batch", "/nx", Route::NotFound);
        check("POST", "/nxv1/batch", "/nx", Route::NotFound);
        check("GET", "/nx", "/nx", Route::NotFound);
        check("POST", "/nx/v1/batch", "", Route::NotFound);
    }

    #[test]
    fn query_params() {
        let cases = [
            ("https://e.test/v1/batch?key=wk_1", "key", Some("wk_1")),
            ("https://e.test/v1/batch?compression=gzip&key=wk_1", "key", Some("wk_1")),
            ("https://e.test/v1/batch?key=a&key=b", "key", Some("a")),
            ("https://e.test/v1/batch?key=", "key", Some("")),
            ("https://e.test/v1/batch?key", "key", Some("")),
            ("https://e.test/v1/batch?key=a%20b+c%2", "key", Some("a b c%2")),
            ("https://e.test/v1/batch?k%65y=x", "key", Some("x")),
            ("https://e.test/v1/batch?key=%FF", "key", Some("\u{fffd}")),
            ("https://e.test/v1/batch?key=a#frag", "key", Some("a")),
            ("https://e.test/v1/batch?keys=a", "key", None),
            ("https://e.test/v1/batch", "key", None),
            ("https://e.test/v1/batch#?key=a", "key", None),
        ];
        for (url, name, expected) in cases {
            assert_eq!(query_param(url, name).as_deref(), expected, "{url}");
        }
    }
}
