//! Validation of one untrusted event: JSON in, a typed [`Event`] or a [`Rejection`] out.
//!
//! Checks run in a fixed order so the same bad event always gets the same code. Nothing here can
//! panic on any input: every access is checked, and recursion is bounded by serde_json's own
//! nesting limit (128) before [`depth`] ever walks a value.

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::codes::RejectCode;
use crate::event::Event;
use crate::limits::*;
use crate::EventType;

/// Why one event was refused, and which field was at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The stable code.
    pub code: RejectCode,
    /// The top-level field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl Rejection {
    fn new(code: RejectCode, field: &'static str) -> Self {
        Rejection { code, field: Some(field) }
    }
    fn whole(code: RejectCode) -> Self {
        Rejection { code, field: None }
    }
}

/// Validates one event given as its JSON text (as cut out of the batch).
pub fn validate_event_json(raw: &str) -> Result<Event, Rejection> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(Rejection::whole(RejectCode::EventTooLarge));
    }
    if let Some(event) = fast::validate(raw) {
        return Ok(event);
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        // serde_json stops at 128 levels of nesting; that is a depth problem, not a shape one.
        if e.to_string().contains("recursion limit") {
            Rejection::whole(RejectCode::PropertiesTooDeep)
        } else {
            Rejection::whole(RejectCode::NotAnObject)
        }
    })?;
    validate_event(value)
}

/// The fast path of [`validate_event_json`]: an event of the usual shape (no unknown fields,
/// every field of its expected type) is read straight into typed structs, without the
/// `serde_json::Value` tree that [`validate_event`] builds and then converts, which cost the
/// origin about a third of its time per event. Everything [`validate_event`] checks is checked
/// here; whenever anything is unusual the answer is `None` and the value path decides, so the
/// two can never disagree (a property test in `tests/fuzz.rs` holds them to it).
mod fast {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, value::MapAccessDeserializer, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use serde_json::{Map, Value};
    use uuid::Uuid;

    use super::{check_map, parse_timestamp};
    use crate::event::{Context, Event, Library, Screen, Utm};
    use crate::limits::{MAX_CONTEXT_STRING_LEN, MAX_ID_LEN, MAX_NAME_LEN};
    use crate::EventType;

    /// Reads a `T` only from a JSON object. A derived struct also accepts an array of its
    /// fields in order (`"context": []` is a valid `Context` to serde), which the value path
    /// refuses; driving the derived visitor through `deserialize_map` refuses it here too.
    struct MapOnly<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for MapOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    fn map_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        d.deserialize_map(MapOnly(PhantomData))
    }

    /// [`map_only`] for an optional object: `null` is `None`.
    struct OptMapOnly<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptMapOnly<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            map_only(d).map(Some)
        }
    }

    fn opt_map_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(OptMapOnly(PhantomData))
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictEvent {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        anonymous_id: Option<String>,
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        session_id: Option<String>,
        timestamp: String,
        #[serde(default)]
        properties: Option<Map<String, Value>>,
        #[serde(default)]
        set: Option<Map<String, Value>>,
        #[serde(default)]
        set_once: Option<Map<String, Value>>,
        #[serde(default)]
        group_type: Option<String>,
        #[serde(default)]
        group_key: Option<String>,
        #[serde(default)]
        previous_id: Option<String>,
        #[serde(default, deserialize_with = "opt_map_only")]
        context: Option<StrictContext>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictContext {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        referrer: Option<String>,
        // Not an `Option`: the typed `Context` refuses a `null` utm (the value path then answers
        // `invalid_field`), so here a `null` must fail too and fall back.
        #[serde(default, deserialize_with = "map_only")]
        utm: StrictUtm,
        #[serde(default, deserialize_with = "opt_map_only")]
        screen: Option<StrictScreen>,
        #[serde(default)]
        locale: Option<String>,
        #[serde(default)]
        timezone: Option<String>,
        #[serde(default, deserialize_with = "opt_map_only")]
        library: Option<StrictLibrary>,
    }

    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictUtm {
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        medium: Option<String>,
        #[serde(default)]
        campaign: Option<String>,
        #[serde(default)]
        term: Option<String>,
        #[serde(default)]
        content: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictScreen {
        width: u32,
        height: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictLibrary {
        name: String,
        version: String,
    }

    fn short(s: &Option<String>) -> bool {
        s.as_ref().is_none_or(|s| s.len() <= MAX_CONTEXT_STRING_LEN)
    }

    fn id_ok(s: &Option<String>) -> bool {
        s.as_ref().is_none_or(|s| !s.is_empty() && s.len() <= MAX_ID_LEN)
    }

    fn context(c: Option<StrictContext>) -> Option<Context> {
        let Some(c) = c else { return Some(Context::default()) };
        let texts = [&c.url, &c.path, &c.title, &c.referrer, &c.locale, &c.timezone];
        if !texts.into_iter().all(short) {
            return None;
        }
        let u = c.utm;
        if ![&u.source, &u.medium, &u.campaign, &u.term, &u.content].into_iter().all(short) {
            return None;
        }
        let utm = Utm { source: u.source, medium: u.medium, campaign: u.campaign, term: u.term, content: u.content };
        let library = match c.library {
            None => None,
            Some(l) if l.name.len() <= MAX_CONTEXT_STRING_LEN && l.version.len() <= MAX_CONTEXT_STRING_LEN => {
                Some(Library { name: l.name, version: l.version })
            }
            Some(_) => return None,
        };
        Some(Context {
            url: c.url,
            path: c.path,
            title: c.title,
            referrer: c.referrer,
            utm,
            screen: c.screen.map(|s| Screen { width: s.width, height: s.height }),
            locale: c.locale,
            timezone: c.timezone,
            library,
            extra: Map::new(),
        })
    }

    /// The event, when it has the usual shape and passes every check; `None` otherwise.
    pub(super) fn validate(raw: &str) -> Option<Event> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let e: StrictEvent = map_only(&mut de).ok()?;
        de.end().ok()?;
        let id = Uuid::try_parse(&e.id).ok()?;
        let kind = EventType::parse(&e.kind)?;
        let name = match (e.name, kind.default_name()) {
            (Some(n), _) if !n.is_empty() && n.len() <= MAX_NAME_LEN => n,
            (None, Some(default)) => default.to_owned(),
            _ => return None,
        };
        let timestamp = parse_timestamp(&e.timestamp)?;
        let ids = [&e.anonymous_id, &e.user_id, &e.session_id, &e.previous_id, &e.group_type, &e.group_key];
        if !ids.into_iter().all(id_ok) {
            return None;
        }
        let required = match kind {
            EventType::Alias => (e.anonymous_id.is_some() || e.user_id.is_some()) && e.previous_id.is_some(),
            EventType::Identify => e.user_id.is_some(),
            EventType::Group => e.group_type.is_some() && e.group_key.is_some(),
            _ => true,
        };
        if !required {
            return None;
        }
        let map = |m: Option<Map<String, Value>>| -> Option<Map<String, Value>> {
            let m = m.unwrap_or_default();
            check_map(&m).ok()?;
            Some(m)
        };
        Some(Event {
            id,
            kind,
            name,
            anonymous_id: e.anonymous_id,
            user_id: e.user_id,
            session_id: e.session_id,
            timestamp,
            properties: map(e.properties)?,
            set: map(e.set)?,
            set_once: map(e.set_once)?,
            group_type: e.group_type,
            group_key: e.group_key,
            previous_id: e.previous_id,
            context: context(e.context)?,
            extra: Map::new(),
        })
    }
}

/// Validates one event given as a parsed JSON value.
pub fn validate_event(value: Value) -> Result<Event, Rejection> {
    let Value::Object(mut obj) = value else {
        return Err(Rejection::whole(RejectCode::NotAnObject));
    };

    let id = match obj.get("id") {
        None | Some(Value::Null) => return Err(Rejection::new(RejectCode::MissingId, "id")),
        Some(Value::String(s)) => Uuid::try_parse(s).map_err(|_| Rejection::new(RejectCode::InvalidId, "id"))?,
        Some(_) => return Err(Rejection::new(RejectCode::InvalidId, "id")),
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => EventType::parse(s),
        _ => None,
    }
    .ok_or(Rejection::new(RejectCode::InvalidType, "type"))?;

    let name = match (opt_str(&obj, "name")?, kind.default_name()) {
        (Some(""), _) => return Err(Rejection::new(RejectCode::MissingName, "name")),
        (Some(n), _) => n.to_owned(),
        (None, Some(default)) => default.to_owned(),
        (None, None) => return Err(Rejection::new(RejectCode::MissingName, "name")),
    };
    if name.len() > MAX_NAME_LEN {
        return Err(Rejection::new(RejectCode::NameTooLong, "name"));
    }

    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => return Err(Rejection::new(RejectCode::MissingTimestamp, "timestamp")),
        Some(Value::String(s)) => {
            parse_timestamp(s).ok_or(Rejection::new(RejectCode::InvalidTimestamp, "timestamp"))?
        }
        Some(_) => return Err(Rejection::new(RejectCode::InvalidTimestamp, "timestamp")),
    };

    let has = |field: &'static str| id_field(&obj, field).map(|v| v.is_some());
    let anonymous_id = has("anonymous_id")?;
    let user_id = has("user_id")?;
    let _session_id = has("session_id")?;
    let previous_id = has("previous_id")?;
    let group_type = has("group_type")?;
    let group_key = has("group_key")?;
    // Without any id the event is cookieless: the collector's daily visitor hash stands in for
    // the person. Only an alias needs an id of its own to join to `previous_id`.
    match kind {
        EventType::Alias if !anonymous_id && !user_id => {
            return Err(Rejection::new(RejectCode::MissingDistinctId, "anonymous_id"))
        }
        EventType::Identify if !user_id => return Err(Rejection::new(RejectCode::MissingUserId, "user_id")),
        EventType::Alias if !previous_id => return Err(Rejection::new(RejectCode::MissingPreviousId, "previous_id")),
        EventType::Group if !group_type || !group_key => {
            return Err(Rejection::new(RejectCode::MissingGroup, "group_key"))
        }
        _ => {}
    }

    for field in ["properties", "set", "set_once"] {
        check_properties(obj.get(field)).map_err(|code| Rejection::new(code, field))?;
    }
    check_context(obj.get("context")).map_err(|code| Rejection::new(code, "context"))?;

    // The checks above guarantee the shape serde expects for the known fields; normalise what
    // they decided (defaulted name, parsed timestamp) and let serde build the struct.
    obj.insert("name".into(), Value::String(name));
    obj.insert("timestamp".into(), Value::String(timestamp.to_rfc3339()));
    for field in ["properties", "set", "set_once", "context"] {
        if obj.get(field).is_some_and(Value::is_null) {
            obj.remove(field);
        }
    }
    let _ = id;
    serde_json::from_value(Value::Object(obj)).map_err(|_| Rejection::whole(RejectCode::InvalidField))
}

/// Applies the size limits to an event that is already typed (events the origin gets from the
/// edge are re-checked with this: a bug or a bypass at the edge must not reach storage).
pub fn check_typed(event: &Event) -> Result<(), Rejection> {
    if event.name.is_empty() {
        return Err(Rejection::new(RejectCode::MissingName, "name"));
    }
    if event.name.len() > MAX_NAME_LEN {
        return Err(Rejection::new(RejectCode::NameTooLong, "name"));
    }
    if event.kind == EventType::Alias && event.distinct_id().is_none() {
        return Err(Rejection::new(RejectCode::MissingDistinctId, "anonymous_id"));
    }
    let ids = [
        ("anonymous_id", &event.anonymous_id),
        ("user_id", &event.user_id),
        ("session_id", &event.session_id),
        ("previous_id", &event.previous_id),
        ("group_type", &event.group_type),
        ("group_key", &event.group_key),
    ];
    for (field, id) in ids {
        if id.as_ref().is_some_and(|s| s.is_empty() || s.len() > MAX_ID_LEN) {
            return Err(Rejection::new(RejectCode::InvalidDistinctId, field));
        }
    }
    for (field, map) in [("properties", &event.properties), ("set", &event.set), ("set_once", &event.set_once)] {
        check_map(map).map_err(|code| Rejection::new(code, field))?;
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp within years 1970..=9999.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let ts = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    (1970..=9999).contains(&ts.year()).then_some(ts)
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::new(RejectCode::InvalidField, field)),
    }
}

fn id_field<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, Rejection> {
    match opt_str(obj, field) {
        Ok(Some(s)) if s.is_empty() || s.len() > MAX_ID_LEN => {
            Err(Rejection::new(RejectCode::InvalidDistinctId, field))
        }
        Err(_) => Err(Rejection::new(RejectCode::InvalidDistinctId, field)),
        other => other,
    }
}

fn check_properties(value: Option<&Value>) -> Result<(), RejectCode> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => check_map(map),
        Some(_) => Err(RejectCode::InvalidProperties),
    }
}

fn check_map(map: &Map<String, Value>) -> Result<(), RejectCode> {
    if map.len() > MAX_PROPERTIES {
        return Err(RejectCode::TooManyProperties);
    }
    for (key, value) in map {
        if key.is_empty() || key.len() > MAX_PROPERTY_KEY_LEN {
            return Err(RejectCode::InvalidPropertyKey);
        }
        if depth(value) > MAX_PROPERTY_DEPTH {
            return Err(RejectCode::PropertiesTooDeep);
        }
        if longest_string(value) > MAX_PROPERTY_VALUE_LEN {
            return Err(RejectCode::PropertyValueTooLong);
        }
    }
    Ok(())
}

/// Nesting depth of a value: a scalar is 0, `{"a":1}` is 1.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn longest_string(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(map) => map.iter().map(|(k, v)| k.len().max(longest_string(v))).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_context(value: Option<&Value>) -> Result<(), RejectCode> {
    let map = match value {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(RejectCode::InvalidContext),
    };
    for key in ["url", "path", "title", "referrer", "locale", "timezone"] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.len() <= MAX_CONTEXT_STRING_LEN => {}
            Some(_) => return Err(RejectCode::InvalidContext),
        }
    }
    let string_fields = |v: Option<&Value>, keys: &[&str]| -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => keys.iter().all(|k| match m.get(*k) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.len() <= MAX_CONTEXT_STRING_LEN,
                Some(_) => false,
            }),
            Some(_) => false,
        }
    };
    if !string_fields(map.get("utm"), &["source", "medium", "campaign", "term", "content"])
        || !string_fields(map.get("library"), &["name", "version"])
    {
        return Err(RejectCode::InvalidContext);
    }
    if let Some(lib) = map.get("library").and_then(Value::as_object) {
        if !lib.get("name").is_some_and(Value::is_string) || !lib.get("version").is_some_and(Value::is_string) {
            return Err(RejectCode::InvalidContext);
        }
    }
    match map.get("screen") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let dim = |k: &str| m.get(k).and_then(Value::as_u64).is_some_and(|n| n <= u64::from(u32::MAX));
            if !dim("width") || !dim("height") {
                return Err(RejectCode::InvalidContext);
            }
        }
        Some(_) => return Err(RejectCode::InvalidContext),
    }
    // The same measures as `depth` and `longest_string` of the object, without building (and
    // cloning the context into) a `Value` for it.
    let depth_of = 1 + map.values().map(depth).max().unwrap_or(0);
    let longest = map.iter().map(|(k, v)| k.len().max(longest_string(v))).max().unwrap_or(0);
    if depth_of > MAX_PROPERTY_DEPTH + 1 || longest > MAX_CONTEXT_STRING_LEN {
        return Err(RejectCode::InvalidContext);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ID: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    fn base() -> Value {
        json!({
            "id": ID, "type": "track", "name": "signup", "anonymous_id": "anon-1",
            "timestamp": "2026-12-01T10:00:00.000Z",
        })
    }

    fn with(patch: Value) -> Value {
        let mut v = base();
        for (k, val) in patch.as_object().unwrap() {
            if val == &json!("__remove__") {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    }

    /// `expected` is `Ok(())` or the code and field of the rejection.
    fn check(input: Value, expected: Result<(), (RejectCode, Option<&str>)>) {
        let got = validate_event(input.clone()).map(|_| ()).map_err(|r| (r.code, r.field));
        assert_eq!(got, expected, "input: {input}");
    }

    #[test]
    fn table() {
        use RejectCode::*;
        let long = "x".repeat(MAX_NAME_LEN + 1);
        check(base(), Ok(()));
        check(json!([1, 2]), Err((NotAnObject, None)));
        check(json!("event"), Err((NotAnObject, None)));
        check(with(json!({"id": "__remove__"})), Err((MissingId, Some("id"))));
        check(with(json!({"id": "not-a-uuid"})), Err((InvalidId, Some("id"))));
        check(with(json!({"id": 7})), Err((InvalidId, Some("id"))));
        check(with(json!({"type": "click"})), Err((InvalidType, Some("type"))));
        check(with(json!({"type": null})), Err((InvalidType, Some("type"))));
        check(with(json!({"name": "__remove__"})), Err((MissingName, Some("name"))));
        check(with(json!({"name": ""})), Err((MissingName, Some("name"))));
        check(with(json!({"name": 3})), Err((InvalidField, Some("name"))));
        check(with(json!({"name": long})), Err((NameTooLong, Some("name"))));
        check(with(json!({"type": "page", "name": "__remove__"})), Ok(()));
        check(with(json!({"timestamp": "__remove__"})), Err((MissingTimestamp, Some("timestamp"))));
        check(with(json!({"timestamp": "yesterday"})), Err((InvalidTimestamp, Some("timestamp"))));
        check(with(json!({"timestamp": 1733040000})), Err((InvalidTimestamp, Some("timestamp"))));
        check(with(json!({"timestamp": "1969-12-31T23:59:59Z"})), Err((InvalidTimestamp, Some("timestamp"))));
        check(with(json!({"timestamp": "2026-12-01T12:00:00+02:00"})), Ok(()));
        check(with(json!({"anonymous_id": "__remove__"})), Ok(()));
        check(
            with(json!({"type": "alias", "anonymous_id": "__remove__", "previous_id": "p"})),
            Err((MissingDistinctId, Some("anonymous_id"))),
        );
        check(with(json!({"anonymous_id": "__remove__", "user_id": "u1"})), Ok(()));
        check(with(json!({"anonymous_id": ""})), Err((InvalidDistinctId, Some("anonymous_id"))));
        check(with(json!({"anonymous_id": 12})), Err((InvalidDistinctId, Some("anonymous_id"))));
        check(with(json!({"session_id": "s".repeat(MAX_ID_LEN + 1)})), Err((InvalidDistinctId, Some("session_id"))));
        check(with(json!({"type": "identify", "name": "__remove__"})), Err((MissingUserId, Some("user_id"))));
        check(
            with(json!({"type": "identify", "user_id": "u1", "set": {"plan": "pro"}, "set_once": {"first": 1}})),
            Ok(()),
        );
        check(with(json!({"type": "alias", "user_id": "u1"})), Err((MissingPreviousId, Some("previous_id"))));
        check(with(json!({"type": "group", "group_type": "company"})), Err((MissingGroup, Some("group_key"))));
        check(with(json!({"type": "group", "group_type": "company", "group_key": "acme"})), Ok(()));
        check(with(json!({"properties": [1]})), Err((InvalidProperties, Some("properties"))));
        check(with(json!({"properties": null})), Ok(()));
        check(with(json!({"set": "x"})), Err((InvalidProperties, Some("set"))));
        let many: Map<String, Value> = (0..=MAX_PROPERTIES).map(|i| (format!("k{i}"), json!(i))).collect();
        check(with(json!({"properties": many})), Err((TooManyProperties, Some("properties"))));
        let mut deep = json!(1);
        for _ in 0..MAX_PROPERTY_DEPTH + 1 {
            deep = json!({ "d": deep });
        }
        check(with(json!({"properties": {"deep": deep}})), Err((PropertiesTooDeep, Some("properties"))));
        check(with(json!({"properties": {"": 1}})), Err((InvalidPropertyKey, Some("properties"))));
        check(
            with(json!({"properties": {"k": "v".repeat(MAX_PROPERTY_VALUE_LEN + 1)}})),
            Err((PropertyValueTooLong, Some("properties"))),
        );
        check(
            with(json!({"properties": {"sql": "'; DROP TABLE events; --", "js": "<script>alert(1)</script>"}})),
            Ok(()),
        );
        check(with(json!({"context": "x"})), Err((InvalidContext, Some("context"))));
        check(with(json!({"context": {"url": 5}})), Err((InvalidContext, Some("context"))));
        check(with(json!({"context": {"screen": {"width": -1, "height": 2}}})), Err((InvalidContext, Some("context"))));
        check(with(json!({"context": {"library": {"name": "x"}}})), Err((InvalidContext, Some("context"))));
        check(
            with(
                json!({"context": {"url": "https://a.test/p?utm_source=x", "utm": {"source": "x"}, "screen": {"width": 1280, "height": 720}, "library": {"name": "nexus-js", "version": "0.1.0"}}}),
            ),
            Ok(()),
        );
    }

    #[test]
    fn keeps_unknown_fields_and_defaults_names() {
        let ev = validate_event(with(
            json!({"type": "page", "name": "__remove__", "future_field": {"a": 1}, "context": {"new_ctx": true}}),
        ))
        .unwrap();
        assert_eq!(ev.name, "$pageview");
        assert_eq!(ev.extra.get("future_field"), Some(&json!({"a": 1})));
        assert_eq!(ev.context.extra.get("new_ctx"), Some(&json!(true)));
        let back = serde_json::to_value(&ev).unwrap();
        assert_eq!(back["future_field"], json!({"a": 1}));
        assert!(check_typed(&ev).is_ok());
    }

    #[test]
    fn oversized_raw_event() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_EVENT_BYTES));
        assert_eq!(validate_event_json(&big).unwrap_err().code, RejectCode::EventTooLarge);
        assert_eq!(validate_event_json("{bad").unwrap_err().code, RejectCode::NotAnObject);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
            Just(json!(ID)),
            Just(json!("track")),
            Just(json!("2026-12-01T10:00:00Z")),
        ];
        leaf.prop_recursive(12, 256, 8, |inner| {
            let keys = prop_oneof![
                Just("id".to_owned()),
                Just("type".to_owned()),
                Just("name".to_owned()),
                Just("timestamp".to_owned()),
                Just("anonymous_id".to_owned()),
                Just("properties".to_owned()),
                Just("context".to_owned()),
                Just("set".to_owned()),
                Just("screen".to_owned()),
                Just("utm".to_owned()),
                ".{0,12}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..10).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_and_accepted_events_pass_typed_checks(v in arb_json()) {
            if let Ok(ev) = validate_event(v.clone()) {
                prop_assert!(check_typed(&ev).is_ok());
                // An accepted event survives a round trip through the forward format.
                let text = serde_json::to_string(&ev).unwrap();
                let again = validate_event_json(&text).unwrap();
                prop_assert_eq!(again, ev);
            }
            let _ = validate_event_json(&v.to_string());
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = validate_event_json(&s);
        }
    }
}
