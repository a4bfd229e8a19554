//! The five event types of protocol version 1.

/// What an event records. Serialised in lowercase (`"track"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "server", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "server", serde(rename_all = "lowercase"))]
pub enum EventType {
    /// A named action (`signup_clicked`).
    Track,
    /// A page view; its name defaults to [`PAGEVIEW_NAME`].
    Page,
    /// Ties the anonymous id to a known user id and sets person properties.
    Identify,
    /// Joins two ids of the same person explicitly (`previous_id` -> `user_id`).
    Alias,
    /// Associates the person with a group (`group_type`, `group_key`).
    Group,
}

/// Name stored for a `page` event that has none.
pub const PAGEVIEW_NAME: &str = "$pageview";
/// Name stored for an `identify` event.
pub const IDENTIFY_NAME: &str = "$identify";
/// Name stored for an `alias` event.
pub const ALIAS_NAME: &str = "$alias";
/// Name stored for a `group` event.
pub const GROUP_NAME: &str = "$group";

impl EventType {
    /// Every type, in wire order.
    pub const ALL: [EventType; 5] =
        [EventType::Track, EventType::Page, EventType::Identify, EventType::Alias, EventType::Group];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Identify => "identify",
            EventType::Alias => "alias",
            EventType::Group => "group",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The name an event of this type gets when the sender gives none (`track` needs one).
    pub fn default_name(self) -> Option<&'static str> {
        match self {
            EventType::Track => None,
            EventType::Page => Some(PAGEVIEW_NAME),
            EventType::Identify => Some(IDENTIFY_NAME),
            EventType::Alias => Some(ALIAS_NAME),
            EventType::Group => Some(GROUP_NAME),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn round_trip_every_type() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("Track"), None);
        assert_eq!(EventType::parse(""), None);
        assert_eq!(EventType::Track.default_name(), None);
        assert_eq!(EventType::Page.default_name(), Some("$pageview"));
    }
}
