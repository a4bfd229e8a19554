//! Consent as a state machine: what the SDK may store and send.
//!
//! - `Pending`: events are recorded in memory only; nothing is written to storage and nothing
//!   leaves the page, so a visitor who never answers the banner leaves no trace.
//! - `Granted`: everything held so far is stored and sent, and so is everything after.
//! - `Denied`: nothing is recorded or sent, and what the SDK had stored is removed.
//!
//! `optIn` and `optOut` move between them at any time. The answer is remembered (only a grant:
//! a denial must leave nothing behind, so the next page starts from its configured state again,
//! and the site's consent banner repeats the denial).

/// `localStorage` key remembering a grant.
pub const CONSENT_KEY: &str = "nexus_consent";
/// The value stored under [`CONSENT_KEY`].
pub const GRANTED: &str = "granted";

/// What the SDK may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Record in memory, store nothing, send nothing.
    Pending,
    /// Store and send.
    Granted,
    /// Record nothing, store nothing, send nothing.
    Denied,
}

impl Consent {
    /// The state a page starts in: `wait` (init option `consent: "pending"`) holds events
    /// until `optIn`; a grant stored by an earlier page counts as given; a browser privacy
    /// signal (Do-Not-Track, Global Privacy Control), when the site asks to honour it, denies
    /// and overrides both.
    pub fn initial(wait: bool, stored: Option<&str>, privacy_signal: bool) -> Consent {
        if privacy_signal {
            Consent::Denied
        } else if !wait || stored == Some(GRANTED) {
            Consent::Granted
        } else {
            Consent::Pending
        }
    }

    /// True when events may be written to storage and sent.
    pub fn granted(self) -> bool {
        self == Consent::Granted
    }

    /// True when events may be recorded at all (held in memory or sent).
    pub fn records(self) -> bool {
        self != Consent::Denied
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn initial_table() {
        use Consent::*;
        let check = |wait: bool, stored: Option<&str>, signal: bool, expected: Consent| {
            assert_eq!(Consent::initial(wait, stored, signal), expected, "{wait} {stored:?} {signal}");
        };
        check(false, None, false, Granted); // the default: no banner
        check(true, None, false, Pending);
        check(true, Some(GRANTED), false, Granted); // granted on an earlier page
        check(true, Some("junk"), false, Pending);
        check(false, None, true, Denied); // DNT/GPC honoured: beats the default ...
        check(true, Some(GRANTED), true, Denied); // ... and a stored grant
    }

    #[test]
    fn what_each_state_allows() {
        let cases = [(Consent::Pending, false, true), (Consent::Granted, true, true), (Consent::Denied, false, false)];
        for (state, granted, records) in cases {
            assert_eq!(state.granted(), granted, "{state:?}");
            assert_eq!(state.records(), records, "{state:?}");
        }
    }
}
