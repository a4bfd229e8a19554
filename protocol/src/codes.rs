//! Stable error codes: the strings clients and dashboards branch on. Never rename one.
//!
//! An [`EnvelopeCode`] refuses a whole request with a 4xx; a [`RejectCode`] refuses one event of
//! an otherwise accepted batch, reported back as `{"index": i, "code": "..."}`.

/// Declares a code enum with its wire spelling, in one table so the two cannot drift apart.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable wire spelling (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            /// Parses the wire spelling; `None` for an unknown code.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|c| c.as_str() == s)
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "server")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "server")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom("unknown code"))
            }
        }
    };
}

codes! {
    /// Why a whole request was refused. Each maps to one HTTP status ([`EnvelopeCode::status`]).
    EnvelopeCode {
        /// The body is not valid JSON, or not a batch object.
        MalformedJson = "malformed_json",
        /// The body is not UTF-8.
        InvalidUtf8 = "invalid_utf8",
        /// The body (after decoding) is larger than [`crate::limits::MAX_BATCH_BYTES`].
        PayloadTooLarge = "payload_too_large",
        /// The batch has more than [`crate::limits::MAX_EVENTS_PER_BATCH`] events.
        TooManyEvents = "too_many_events",
        /// The batch has no events.
        EmptyBatch = "empty_batch",
        /// `sent_at` is present but not an RFC 3339 timestamp.
        InvalidSentAt = "invalid_sent_at",
        /// The content type is neither `application/json` nor `text/plain`.
        UnsupportedMediaType = "unsupported_media_type",
        /// The body claims gzip but does not decode.
        InvalidEncoding = "invalid_encoding",
        /// The content encoding is not supported (only gzip is).
        UnsupportedEncoding = "unsupported_encoding",
        /// No write key in the URL or header.
        MissingKey = "missing_key",
        /// The key is not known.
        InvalidKey = "invalid_key",
        /// The key was revoked.
        RevokedKey = "revoked_key",
        /// The key is valid but lacks the scope this endpoint needs.
        InsufficientScope = "insufficient_scope",
        /// The request's `Origin` is not among the project's allowed origins.
        OriginNotAllowed = "origin_not_allowed",
        /// The edge signature is missing or wrong.
        InvalidSignature = "invalid_signature",
        /// The edge signature's timestamp is outside the replay window.
        SignatureExpired = "signature_expired",
        /// A query parameter is missing or invalid.
        InvalidQuery = "invalid_query",
        /// No such route.
        NotFound = "not_found",
        /// The method is not allowed on this route.
        MethodNotAllowed = "method_not_allowed",
        /// Too many requests; retry after the `Retry-After` header.
        RateLimited = "rate_limited",
        /// The service cannot take the request now (storage down or overloaded); retry later.
        Unavailable = "unavailable",
        /// An upstream (the origin, seen from the edge) failed; retry later.
        UpstreamError = "upstream_error",
        /// A bug on our side; logged with details, never shown.
        Internal = "internal",
    }
}

impl EnvelopeCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        use EnvelopeCode::*;
        match self {
            MalformedJson | InvalidUtf8 | EmptyBatch | InvalidSentAt | InvalidEncoding | InvalidQuery => 400,
            MissingKey | InvalidKey | InvalidSignature | SignatureExpired => 401,
            RevokedKey | InsufficientScope | OriginNotAllowed => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            PayloadTooLarge | TooManyEvents => 413,
            UnsupportedMediaType | UnsupportedEncoding => 415,
            RateLimited => 429,
            Internal => 500,
            UpstreamError => 502,
            Unavailable => 503,
        }
    }
}

codes! {
    /// Why one event of a batch was refused. The other events of the batch are unaffected.
    RejectCode {
        /// The event is not a JSON object.
        NotAnObject = "not_an_object",
        /// The serialised event exceeds [`crate::limits::MAX_EVENT_BYTES`].
        EventTooLarge = "event_too_large",
        /// `id` is missing.
        MissingId = "missing_id",
        /// `id` is not a UUID.
        InvalidId = "invalid_id",
        /// `type` is missing or not one of the five types.
        InvalidType = "invalid_type",
        /// A `track` event without a name.
        MissingName = "missing_name",
        /// The name is longer than [`crate::limits::MAX_NAME_LEN`].
        NameTooLong = "name_too_long",
        /// `timestamp` is missing.
        MissingTimestamp = "missing_timestamp",
        /// `timestamp` is not an RFC 3339 timestamp, or is before 2000 or after 9999.
        InvalidTimestamp = "invalid_timestamp",
        /// An `alias` with neither `anonymous_id` nor `user_id` (other events without ids are
        /// cookieless: the visitor hash stands in).
        MissingDistinctId = "missing_distinct_id",
        /// An id field is empty or longer than [`crate::limits::MAX_ID_LEN`].
        InvalidDistinctId = "invalid_distinct_id",
        /// `identify` without `user_id`.
        MissingUserId = "missing_user_id",
        /// `alias` without `previous_id`.
        MissingPreviousId = "missing_previous_id",
        /// `group` without `group_type` and `group_key`.
        MissingGroup = "missing_group",
        /// `properties`, `set` or `set_once` is not an object.
        InvalidProperties = "invalid_properties",
        /// More than [`crate::limits::MAX_PROPERTIES`] keys.
        TooManyProperties = "too_many_properties",
        /// A property nests deeper than [`crate::limits::MAX_PROPERTY_DEPTH`].
        PropertiesTooDeep = "properties_too_deep",
        /// A property key is empty or longer than [`crate::limits::MAX_PROPERTY_KEY_LEN`].
        InvalidPropertyKey = "invalid_property_key",
        /// A string property value is longer than [`crate::limits::MAX_PROPERTY_VALUE_LEN`].
        PropertyValueTooLong = "property_value_too_long",
        /// `context` is not an object or one of its known fields has the wrong type or size.
        InvalidContext = "invalid_context",
        /// A known field has the wrong JSON type.
        InvalidField = "invalid_field",
        /// An event with this id was already stored (reported by the origin, counted, harmless).
        Duplicate = "duplicate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        let all = EnvelopeCode::ALL.iter().map(|c| c.as_str()).chain(RejectCode::ALL.iter().map(|c| c.as_str()));
        for s in all {
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{s}");
        }
        for c in EnvelopeCode::ALL {
            assert_eq!(EnvelopeCode::parse(c.as_str()), Some(*c));
        }
        for c in RejectCode::ALL {
            assert_eq!(RejectCode::parse(c.as_str()), Some(*c));
        }
    }

    #[test]
    fn envelope_statuses() {
        let cases = [
            (EnvelopeCode::MalformedJson, 400),
            (EnvelopeCode::PayloadTooLarge, 413),
            (EnvelopeCode::UnsupportedMediaType, 415),
            (EnvelopeCode::InvalidKey, 401),
            (EnvelopeCode::RevokedKey, 403),
            (EnvelopeCode::InvalidSignature, 401),
            (EnvelopeCode::SignatureExpired, 401),
            (EnvelopeCode::RateLimited, 429),
            (EnvelopeCode::Unavailable, 503),
        ];
        for (code, status) in cases {
            assert_eq!(code.status(), status, "{code}");
        }
        // Every 4xx except 429 is final for a sender; 429 and 5xx are retried.
        for c in EnvelopeCode::ALL {
            let s = c.status();
            assert_eq!(crate::retry::should_retry(s), s == 429 || s >= 500, "{c}");
        }
    }
}
