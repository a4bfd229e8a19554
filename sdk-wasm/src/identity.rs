//! Who and when: the anonymous id, the user id and the session, kept in a [`Storage`].
//!
//! Pure logic behind a two-method trait so native tests drive it with a map; the browser uses
//! `localStorage` (see `web::storage`). Storage is best-effort: when it is unavailable (private
//! mode, blocked cookies) every value still lives in memory for the life of the page.

use crate::wire::{parse_u64, push_padded, valid_id};

/// `localStorage` key of the anonymous id (part of the public contract: docs name it).
pub const ANON_KEY: &str = "nexus_anon_id";
/// `localStorage` key of the user id set by `identify`.
pub const USER_KEY: &str = "nexus_user_id";
/// `localStorage` key of the session: `<session id>|<last activity, Unix ms>`.
pub const SESSION_KEY: &str = "nexus_session";
/// A session ends after this much inactivity (the usual web analytics definition).
pub const SESSION_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Within this long of this page's last event, the session is taken from memory: neither read
/// nor written. Writing `localStorage` at every event was the largest part of `track()`'s cost
/// in a burst; a last-activity time up to a second old changes nothing against a 30-minute
/// timeout.
pub const SESSION_REFRESH_MS: u64 = 1000;

/// String key-value storage that may fail silently.
pub trait Storage {
    /// The stored value, or `None` when absent or when storage cannot be read.
    fn get(&self, key: &str) -> Option<String>;
    /// Stores a value; failures (quota, disabled storage) are ignored by design.
    fn set(&self, key: &str, value: &str);
    /// Removes a value (consent withdrawn: nothing may be left behind).
    fn remove(&self, key: &str);
}

/// The ids stamped on every event, cached in memory and mirrored to a [`Storage`].
#[derive(Debug, Default)]
pub struct Identity {
    anonymous_id: Option<String>,
    user_id: Option<String>,
    /// Whether storage was read for the user id (so that a page without one does not read it
    /// at every event).
    user_read: bool,
    session: Option<(String, u64)>,
    /// When this page last wrote the session's activity.
    session_written: u64,
}

impl Identity {
    /// An identity with nothing cached yet: values are read from storage on first use.
    pub fn new() -> Identity {
        Identity::default()
    }

    /// The device's anonymous id: from memory, else from storage, else `fresh()` (then stored).
    pub fn anonymous_id(&mut self, storage: &impl Storage, fresh: impl FnOnce() -> String) -> String {
        if let Some(id) = &self.anonymous_id {
            return id.clone();
        }
        let id = match storage.get(ANON_KEY).filter(|s| valid_id(s)) {
            Some(id) => id,
            None => {
                let id = fresh();
                storage.set(ANON_KEY, &id);
                id
            }
        };
        self.anonymous_id = Some(id.clone());
        id
    }

    /// The user id set by a previous [`Identity::set_user_id`], in this page or an earlier one.
    pub fn user_id(&mut self, storage: &impl Storage) -> Option<String> {
        if !self.user_read {
            self.user_read = true;
            self.user_id = storage.get(USER_KEY).filter(|s| valid_id(s));
        }
        self.user_id.clone()
    }

    /// Remembers the user id for the events that follow (and later page loads).
    pub fn set_user_id(&mut self, storage: &impl Storage, user_id: &str) {
        storage.set(USER_KEY, user_id);
        self.user_id = Some(user_id.to_owned());
        self.user_read = true;
    }

    /// The session id for an event at `now`, recording `now` as the last activity.
    ///
    /// Storage is read, not only the cache, unless this page's last write is less than
    /// [`SESSION_REFRESH_MS`] old: tabs of one site share `localStorage`, so activity in one
    /// tab keeps the session of the others alive, as users expect.
    pub fn session_id(&mut self, storage: &impl Storage, now: u64, fresh: impl FnOnce() -> String) -> String {
        if let Some((id, last)) = &mut self.session {
            // A clock that went backwards gives 0 here: still within the second.
            if now.saturating_sub(self.session_written) < SESSION_REFRESH_MS {
                *last = now;
                return id.clone();
            }
        }
        let current = storage.get(SESSION_KEY).and_then(|s| parse_session(&s)).or_else(|| self.session.clone());
        let id = match current {
            // A clock that went backwards gives 0 here: the session goes on.
            Some((id, last)) if now.saturating_sub(last) < SESSION_TIMEOUT_MS => id,
            _ => fresh(),
        };
        storage.set(SESSION_KEY, &session_value(&id, now));
        self.session = Some((id.clone(), now));
        self.session_written = now;
        id
    }
}

impl Identity {
    /// Writes the ids held in memory to storage: consent was granted after they were made.
    pub fn persist(&self, storage: &impl Storage) {
        if let Some(id) = &self.anonymous_id {
            storage.set(ANON_KEY, id);
        }
        if let Some(id) = &self.user_id {
            storage.set(USER_KEY, id);
        }
        if let Some((id, last)) = &self.session {
            storage.set(SESSION_KEY, &session_value(id, *last));
        }
    }

    /// Forgets every id, in memory and in storage (consent withdrawn, or a logout).
    pub fn forget(&mut self, storage: &impl Storage) {
        for key in [ANON_KEY, USER_KEY, SESSION_KEY] {
            storage.remove(key);
        }
        *self = Identity::new();
    }
}

fn session_value(id: &str, last: u64) -> String {
    let mut value = String::with_capacity(id.len() + 15);
    value.push_str(id);
    value.push('|');
    push_padded(&mut value, last, 1);
    value
}

/// Parses `<id>|<unix ms>`; `None` for anything else (a corrupt value starts a new session).
fn parse_session(s: &str) -> Option<(String, u64)> {
    // By bytes and `get`, not `rsplit_once`: no slicing panic in the wasm (see `wire::parse_u64`).
    // `|` is ASCII, so the bytes on either side of it are whole UTF-8 sequences.
    let bar = s.bytes().rposition(|b| b == b'|')?;
    let id = s.get(..bar)?;
    let last = parse_u64(s.as_bytes().get(bar + 1..)?)?;
    valid_id(id).then(|| (id.to_owned(), last))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A map, or a storage that always fails (`broken`), like `localStorage` in some private modes.
    #[derive(Default)]
    struct MapStorage {
        map: RefCell<HashMap<String, String>>,
        broken: bool,
    }

    impl Storage for MapStorage {
        fn get(&self, key: &str) -> Option<String> {
            if self.broken {
                return None;
            }
            self.map.borrow().get(key).cloned()
        }
        fn set(&self, key: &str, value: &str) {
            if !self.broken {
                self.map.borrow_mut().insert(key.to_owned(), value.to_owned());
            }
        }
        fn remove(&self, key: &str) {
            self.map.borrow_mut().remove(key);
        }
    }

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("id-{n}")
        }
    }

    #[test]
    fn anonymous_id_is_made_once_and_persisted() {
        let storage = MapStorage::default();
        let mut fresh = counter();
        let first = Identity::new().anonymous_id(&storage, &mut fresh);
        assert_eq!(first, "id-1");
        assert_eq!(storage.get(ANON_KEY).as_deref(), Some("id-1"));
        // A new page load (new Identity) finds the stored id and makes none.
        let again = Identity::new().anonymous_id(&storage, &mut fresh);
        assert_eq!(again, "id-1");
        // A corrupt stored value is replaced, never sent (the edge would reject the event).
        storage.set(ANON_KEY, "");
        assert_eq!(Identity::new().anonymous_id(&storage, &mut fresh), "id-2");
    }

    #[test]
    fn broken_storage_keeps_ids_in_memory() {
        let storage = MapStorage { broken: true, ..MapStorage::default() };
        let mut fresh = counter();
        let mut identity = Identity::new();
        assert_eq!(identity.anonymous_id(&storage, &mut fresh), "id-1");
        assert_eq!(identity.anonymous_id(&storage, &mut fresh), "id-1");
        assert_eq!(identity.session_id(&storage, 1000, &mut fresh), "id-2");
        assert_eq!(identity.session_id(&storage, 2000, &mut fresh), "id-2");
        identity.set_user_id(&storage, "u1");
        assert_eq!(identity.user_id(&storage).as_deref(), Some("u1"));
    }

    #[test]
    fn ids_made_before_consent_are_stored_on_grant_and_forgotten_on_denial() {
        // Pending: a storage that keeps nothing stands for "memory only".
        let nothing = MapStorage { broken: true, ..MapStorage::default() };
        let storage = MapStorage::default();
        let mut fresh = counter();
        let mut identity = Identity::new();
        let anon = identity.anonymous_id(&nothing, &mut fresh);
        let session = identity.session_id(&nothing, 1000, &mut fresh);
        identity.set_user_id(&nothing, "u1");
        identity.persist(&storage);
        assert_eq!(storage.get(ANON_KEY), Some(anon.clone()));
        assert_eq!(storage.get(USER_KEY).as_deref(), Some("u1"));
        assert_eq!(storage.get(SESSION_KEY), Some(format!("{session}|1000")));
        // The next page load continues with the same ids.
        assert_eq!(Identity::new().anonymous_id(&storage, &mut fresh), anon);
        identity.forget(&storage);
        assert!(storage.map.borrow().is_empty(), "nothing left behind");
        assert_ne!(identity.anonymous_id(&storage, &mut fresh), anon, "a new person after forgetting");
    }

    #[test]
    fn user_id_survives_reload() {
        let storage = MapStorage::default();
        assert_eq!(Identity::new().user_id(&storage), None);
        Identity::new().set_user_id(&storage, "user-42");
        assert_eq!(Identity::new().user_id(&storage).as_deref(), Some("user-42"));
    }

    #[test]
    fn session_table() {
        const T: u64 = SESSION_TIMEOUT_MS;
        // (stored value before the event, now, expected session id, stored value after)
        let cases: &[(Option<&str>, u64, &str, &str)] = &[
            (None, 1000, "new", "new|1000"),
            (Some("s1|1000"), 1000 + T - 1, "s1", "s1|1800999"),
            (Some("s1|1000"), 1000 + T, "new", "new|1801000"),
            (Some("s1|5000"), 4000, "s1", "s1|4000"), // clock went back: same session
            (Some("garbage"), 10, "new", "new|10"),
            (Some("|10"), 10, "new", "new|10"),
            (Some("s1|x"), 10, "new", "new|10"),
        ];
        for &(stored, now, expected, after) in cases {
            let storage = MapStorage::default();
            if let Some(v) = stored {
                storage.set(SESSION_KEY, v);
            }
            let id = Identity::new().session_id(&storage, now, || "new".to_owned());
            assert_eq!(id, expected, "stored {stored:?} now {now}");
            assert_eq!(storage.get(SESSION_KEY).as_deref(), Some(after), "stored {stored:?} now {now}");
        }
    }

    #[test]
    fn a_burst_reads_and_writes_the_session_once_a_second() {
        let storage = MapStorage::default();
        let mut identity = Identity::new();
        // (now, stored value after the event): written at 0, then not until 1000 ms later
        let cases: &[(u64, &str)] =
            &[(0, "s1|0"), (1, "s1|0"), (999, "s1|0"), (1000, "s1|1000"), (1500, "s1|1000"), (2100, "s1|2100")];
        for &(now, after) in cases {
            assert_eq!(identity.session_id(&storage, now, || "s1".to_owned()), "s1");
            assert_eq!(storage.get(SESSION_KEY).as_deref(), Some(after), "now {now}");
        }
        // The session's activity in memory is exact: the timeout counts from the last event.
        assert_eq!(identity.session, Some(("s1".to_owned(), 2100)));
        // A user id is read from storage once, not at every event, and a later identify wins.
        storage.set(USER_KEY, "u1");
        assert_eq!(identity.user_id(&storage).as_deref(), Some("u1"));
        storage.set(USER_KEY, "changed-elsewhere");
        assert_eq!(identity.user_id(&storage).as_deref(), Some("u1"));
        identity.set_user_id(&storage, "u2");
        assert_eq!(identity.user_id(&storage).as_deref(), Some("u2"));
    }

    #[test]
    fn activity_in_another_tab_extends_the_session() {
        let storage = MapStorage::default();
        let mut tab_a = Identity::new();
        let mut tab_b = Identity::new();
        let s = tab_a.session_id(&storage, 0, || "s1".to_owned());
        // Tab B is active 20 minutes later, tab A again 40 minutes after its own last event:
        // the session continues because B's activity is in the shared storage.
        assert_eq!(tab_b.session_id(&storage, 20 * 60_000, || "s2".to_owned()), s);
        assert_eq!(tab_a.session_id(&storage, 40 * 60_000, || "s3".to_owned()), s);
    }
}
