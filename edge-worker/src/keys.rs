//! Write-key resolution: the origin's answer, how it is judged, and an in-isolate cache.
//!
//! The cache lives in isolate memory (one per worker instance, lost on eviction). Time is passed
//! in as milliseconds so the expiry logic tests natively.

use std::collections::HashMap;

use protocol::envelope::{EnvelopeError, ErrorBody};
use protocol::forward::KeyLookupResponse;
use protocol::EnvelopeCode;

/// How long a known key (active or revoked) is cached, in milliseconds.
pub const KNOWN_TTL_MS: u64 = 60_000;
/// How long an unknown key is cached, in milliseconds: short, so a new key works quickly.
pub const UNKNOWN_TTL_MS: u64 = 10_000;
/// Most keys cached at once; a flood of random keys cannot grow the isolate's memory.
pub const MAX_CACHED_KEYS: usize = 10_000;

/// Longest write key worth a lookup; anything longer is unknown without asking the origin.
pub const MAX_WRITE_KEY_LEN: usize = 256;

/// True when `key` could be a write key (1 to [`MAX_WRITE_KEY_LEN`] visible ASCII characters).
/// Anything else is answered `invalid_key` without a lookup, so junk never reaches the origin.
pub fn plausible_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_WRITE_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What the origin says about a write key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The key exists (it may be revoked).
    Known(KnownKey),
    /// No such key.
    Unknown,
}

/// A key the origin knows: its project, and the project's quota when the origin sets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// The lookup answer (project, revocation, allowed origins).
    pub project: KeyLookupResponse,
    /// Events per minute the project may send (`events_per_minute` in the lookup answer, an
    /// optional field the protocol type does not carry); `None`: the worker's default.
    pub events_per_minute: Option<u64>,
}

/// The optional quota field of a lookup answer, read on its own so that an origin without it
/// (or with a malformed one) still resolves keys.
#[derive(serde::Deserialize)]
struct QuotaField {
    #[serde(default)]
    events_per_minute: Option<u64>,
}

/// Why a key lookup gave no usable answer (the sender gets a retryable `upstream_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The origin answered with a status that is not part of the lookup contract.
    #[error("key lookup answered status {0}")]
    Status(u16),
    /// The origin answered 200 with a body that is not a key lookup response.
    #[error("key lookup answered an unreadable body")]
    InvalidBody,
}

/// Judges the origin's answer to a key lookup.
///
/// A 401/404 counts as "unknown key" only with the `invalid_key` code: a misrouted `ORIGIN_URL`
/// or a wrong signing secret must not make every key look invalid (senders drop events on 401).
pub fn interpret_lookup(status: u16, body: &[u8]) -> Result<KeyState, LookupError> {
    match status {
        200 => {
            let project = serde_json::from_slice::<KeyLookupResponse>(body).map_err(|_| LookupError::InvalidBody)?;
            let events_per_minute = serde_json::from_slice::<QuotaField>(body).ok().and_then(|q| q.events_per_minute);
            Ok(KeyState::Known(KnownKey { project, events_per_minute }))
        }
        401 | 404 => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) if b.error.code == EnvelopeCode::InvalidKey => Ok(KeyState::Unknown),
            _ => Err(LookupError::Status(status)),
        },
        other => Err(LookupError::Status(other)),
    }
}

/// The project of a usable key, or the envelope error to answer.
pub fn check_key(state: &KeyState) -> Result<&KnownKey, EnvelopeError> {
    match state {
        KeyState::Unknown => Err(EnvelopeError::new(EnvelopeCode::InvalidKey, "the write key is not known")),
        KeyState::Known(k) if k.project.revoked => {
            Err(EnvelopeError::new(EnvelopeCode::RevokedKey, "the write key was revoked"))
        }
        KeyState::Known(k) => Ok(k),
    }
}

#[derive(Debug)]
struct Entry {
    state: KeyState,
    expires_at_ms: u64,
}

/// Key answers with an expiry: [`KNOWN_TTL_MS`] for known keys, [`UNKNOWN_TTL_MS`] for unknown.
#[derive(Debug)]
pub struct KeyCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::with_capacity(MAX_CACHED_KEYS)
    }
}

impl KeyCache {
    /// An empty cache holding at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        KeyCache { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The cached answer for `key`, unless it expired.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&KeyState> {
        self.entries.get(key).filter(|e| now_ms < e.expires_at_ms).map(|e| &e.state)
    }

    /// Caches an answer from `now_ms`. When full, expired entries go first, then everything.
    pub fn insert(&mut self, key: &str, state: KeyState, now_ms: u64) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            self.entries.retain(|_, e| now_ms < e.expires_at_ms);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let ttl = match state {
            KeyState::Known(_) => KNOWN_TTL_MS,
            KeyState::Unknown => UNKNOWN_TTL_MS,
        };
        self.entries.insert(key.to_owned(), Entry { state, expires_at_ms: now_ms.saturating_add(ttl) });
    }

    /// Number of entries held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known(revoked: bool) -> KeyState {
        let project = KeyLookupResponse { project_id: 7, revoked, allowed_origins: vec![] };
        KeyState::Known(KnownKey { project, events_per_minute: None })
    }

    fn check(status: u16, body: &str, expected: Result<KeyState, LookupError>) {
        assert_eq!(interpret_lookup(status, body.as_bytes()), expected, "{status} {body}");
    }

    #[test]
    fn lookup_answers() {
        let ok = r#"{"project_id": 7, "revoked": false, "allowed_origins": []}"#;
        let invalid = r#"{"error": {"code": "invalid_key", "message": "no"}}"#;
        let bad_sig = r#"{"error": {"code": "invalid_signature", "message": "no"}}"#;
        check(200, ok, Ok(known(false)));
        check(200, r#"{"project_id": 7, "revoked": true, "allowed_origins": []}"#, Ok(known(true)));
        let with_quota = KeyState::Known(KnownKey {
            project: KeyLookupResponse { project_id: 7, revoked: false, allowed_origins: vec![] },
            events_per_minute: Some(5000),
        });
        check(
            200,
            r#"{"project_id": 7, "revoked": false, "allowed_origins": [], "events_per_minute": 5000}"#,
            Ok(with_quota),
        );
        check(
            200,
            r#"{"project_id": 7, "revoked": false, "allowed_origins": [], "events_per_minute": -1}"#,
            Ok(known(false)),
        );
        check(
            200,
            r#"{"project_id": 7, "revoked": false, "allowed_origins": [], "events_per_minute": null}"#,
            Ok(known(false)),
        );
        check(200, "{}", Err(LookupError::InvalidBody));
        check(200, "<html>", Err(LookupError::InvalidBody));
        check(404, invalid, Ok(KeyState::Unknown));
        check(401, invalid, Ok(KeyState::Unknown));
        check(401, bad_sig, Err(LookupError::Status(401)));
        check(404, "not found", Err(LookupError::Status(404)));
        check(503, "", Err(LookupError::Status(503)));
        check(500, invalid, Err(LookupError::Status(500)));
    }

    #[test]
    fn plausible_keys() {
        let long = "k".repeat(MAX_WRITE_KEY_LEN + 1);
        let cases = [
            ("wk_live_abc123", true),
            ("", false),
            ("a b", false),
            ("ключ", false),
            (long.as_str(), false),
            (&long[1..], true),
        ];
        for (key, expected) in cases {
            assert_eq!(plausible_key(key), expected, "{key:?}");
        }
    }

    #[test]
    fn key_verdicts() {
        assert_eq!(check_key(&KeyState::Unknown).unwrap_err().code, EnvelopeCode::InvalidKey);
        assert_eq!(check_key(&known(true)).unwrap_err().code, EnvelopeCode::RevokedKey);
        assert_eq!(check_key(&known(false)).unwrap().project.project_id, 7);
    }

    #[test]
    fn expiry() {
        let mut c = KeyCache::default();
        c.insert("good", known(false), 1_000);
        c.insert("nope", KeyState::Unknown, 1_000);
        assert_eq!(c.get("good", 1_000), Some(&known(false)));
        assert_eq!(c.get("nope", 1_000 + UNKNOWN_TTL_MS - 1), Some(&KeyState::Unknown));
        assert_eq!(c.get("nope", 1_000 + UNKNOWN_TTL_MS), None);
        assert_eq!(c.get("good", 1_000 + KNOWN_TTL_MS - 1), Some(&known(false)));
        assert_eq!(c.get("good", 1_000 + KNOWN_TTL_MS), None);
        assert_eq!(c.get("other", 1_000), None);
        c.insert("good", known(true), 100_000);
        assert_eq!(c.get("good", 100_001), Some(&known(true)));
    }

    #[test]
    fn capacity_is_bounded() {
        let mut c = KeyCache::with_capacity(3);
        c.insert("a", KeyState::Unknown, 0);
        c.insert("b", known(false), 0);
        c.insert("c", known(false), 0);
        // "a" has expired by now: it makes room, the live entries stay.
        c.insert("d", known(false), UNKNOWN_TTL_MS);
        assert_eq!(c.len(), 3);
        assert!(c.get("b", UNKNOWN_TTL_MS).is_some());
        // Nothing expired: the cache starts over rather than grow.
        c.insert("e", known(false), UNKNOWN_TTL_MS);
        assert_eq!(c.len(), 1);
        assert!(c.get("e", UNKNOWN_TTL_MS).is_some());
        // Re-inserting a present key never evicts.
        let mut c = KeyCache::with_capacity(1);
        c.insert("a", KeyState::Unknown, 0);
        c.insert("a", known(false), 0);
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
    }
}
