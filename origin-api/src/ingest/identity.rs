//! Identity resolution, planned in memory: which persons to create, which ids to (re)map, which
//! persons to merge, and the person properties to set, for one batch of new events.
//!
//! Rules (PostHog's): `identify(user, anonymous)` merges the anonymous person into the user's
//! person unless both are already identified; `alias(previous, id)` joins two ids explicitly
//! (also refused when both persons are identified, so a typo cannot fuse two customers); any
//! other event maps its distinct id to a person, creating one when new. `set` overwrites,
//! `set_once` keeps the first value. Events are applied in time order.

use std::collections::HashMap;

use protocol::event::Event;
use protocol::EventType;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A person and its property changes: (person, set, set_once).
pub type PersonProperties = (Uuid, Map<String, Value>, Map<String, Value>);

/// Person properties to apply: (set, set_once).
pub type PropertyChange = (Map<String, Value>, Map<String, Value>);

/// What the database knows about a distinct id of the batch before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its person.
    pub person: Uuid,
    /// Whether that person is identified.
    pub identified: bool,
}

/// The changes one batch makes to identity, ready to be written.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Persons to create: id and whether identified.
    pub create: Vec<(Uuid, bool)>,
    /// Distinct ids to map (insert or re-point) to a person.
    pub map: Vec<(String, Uuid)>,
    /// Merges, in order: every id of `from` goes to `into`, `from` is deleted.
    pub merge: Vec<(Uuid, Uuid)>,
    /// Existing persons that became identified.
    pub identify: Vec<Uuid>,
    /// Property changes per final person: (set, set_once).
    pub properties: Vec<PersonProperties>,
    /// Merges refused because both persons were identified (counted as a warning).
    pub refused_merges: usize,
}

struct Planner {
    ids: HashMap<String, Uuid>,
    identified: HashMap<Uuid, bool>,
    plan: Plan,
    props: HashMap<Uuid, PropertyChange>,
    new_person: Box<dyn FnMut() -> Uuid>,
}

impl Planner {
    fn person_of(&self, id: &str) -> Option<Uuid> {
        self.ids.get(id).copied()
    }

    fn is_identified(&self, p: Uuid) -> bool {
        self.identified.get(&p).copied().unwrap_or(false)
    }

    fn create(&mut self, identified: bool) -> Uuid {
        let p = (self.new_person)();
        self.plan.create.push((p, identified));
        self.identified.insert(p, identified);
        p
    }

    fn map(&mut self, id: &str, p: Uuid) {
        if self.ids.get(id) != Some(&p) {
            self.ids.insert(id.to_owned(), p);
            self.plan.map.push((id.to_owned(), p));
        }
    }

    fn mark_identified(&mut self, p: Uuid) {
        if !self.is_identified(p) {
            self.identified.insert(p, true);
            match self.plan.create.iter_mut().find(|(c, _)| *c == p) {
                Some(created) => created.1 = true,
                None => self.plan.identify.push(p),
            }
        }
    }

    fn merge(&mut self, from: Uuid, into: Uuid) {
        if from == into {
            return;
        }
        for v in self.ids.values_mut() {
            if *v == from {
                *v = into;
            }
        }
        for (_, v) in self.plan.map.iter_mut() {
            if *v == from {
                *v = into;
            }
        }
        if let Some((set, once)) = self.props.remove(&from) {
            let entry = self.props.entry(into).or_default();
            // The surviving person's own changes win over the merged one's.
            let mut merged_set = set;
            merged_set.extend(std::mem::take(&mut entry.0));
            entry.0 = merged_set;
            for (k, v) in once {
                entry.1.entry(k).or_insert(v);
            }
        }
        if self.is_identified(from) {
            self.mark_identified(into);
        }
        self.plan.merge.push((from, into));
    }

    /// The person of `id`, created (anonymous or identified) when the id is new.
    fn ensure(&mut self, id: &str, identified: bool) -> Uuid {
        match self.person_of(id) {
            Some(p) => p,
            None => {
                let p = self.create(identified);
                self.map(id, p);
                p
            }
        }
    }

    fn apply(&mut self, e: &Event, distinct_id: &str) {
        let person = match e.kind {
            EventType::Identify => {
                self.identify(e.user_id.as_deref().unwrap_or(distinct_id), e.anonymous_id.as_deref())
            }
            EventType::Alias => {
                let other = e.previous_id.as_deref().unwrap_or(distinct_id);
                self.alias(other, distinct_id)
            }
            _ => self.ensure(distinct_id, e.user_id.is_some()),
        };
        if !e.set.is_empty() || !e.set_once.is_empty() {
            let entry = self.props.entry(person).or_default();
            entry.0.extend(e.set.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (k, v) in &e.set_once {
                if !entry.0.contains_key(k) {
                    entry.1.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }

    fn identify(&mut self, user: &str, anonymous: Option<&str>) -> Uuid {
        let p_user = self.person_of(user);
        let p_anon = anonymous.filter(|a| *a != user).and_then(|a| self.person_of(a));
        match (p_user, p_anon) {
            (Some(u), None) => {
                if let Some(a) = anonymous.filter(|a| *a != user) {
                    self.map(a, u);
                }
                self.mark_identified(u);
                u
            }
            (None, Some(a)) if !self.is_identified(a) => {
                self.map(user, a);
                self.mark_identified(a);
                a
            }
            // The device's anonymous id belongs to another identified user (a shared device):
            // this user gets a person of their own; the other person is left alone.
            (None, Some(_)) | (None, None) => {
                let p = self.create(true);
                self.map(user, p);
                if let (Some(a), None) = (anonymous.filter(|a| *a != user), p_anon) {
                    self.map(a, p);
                }
                p
            }
            (Some(u), Some(a)) => {
                if u != a {
                    if self.is_identified(a) && self.is_identified(u) {
                        self.plan.refused_merges += 1;
                    } else {
                        self.merge(a, u);
                    }
                }
                self.mark_identified(u);
                u
            }
        }
    }

    fn alias(&mut self, previous: &str, id: &str) -> Uuid {
        match (self.person_of(previous), self.person_of(id)) {
            (None, None) => {
                let p = self.create(false);
                self.map(previous, p);
                self.map(id, p);
                p
            }
            (Some(p), None) | (None, Some(p)) => {
                self.map(previous, p);
                self.map(id, p);
                p
            }
            (Some(a), Some(b)) if a == b => a,
            (Some(a), Some(b)) => {
                if self.is_identified(a) && self.is_identified(b) {
                    self.plan.refused_merges += 1;
                    b
                } else if self.is_identified(a) {
                    self.merge(b, a);
                    a
                } else {
                    self.merge(a, b);
                    b
                }
            }
        }
    }
}

/// Plans identity for events (already in time order) given what the database knows about their
/// ids. `new_person` makes fresh person ids (UUID v7 in production, a counter in tests).
pub fn plan<'a>(
    events: impl IntoIterator<Item = (&'a Event, &'a str)>,
    known: &HashMap<String, Known>,
    new_person: impl FnMut() -> Uuid + 'static,
) -> Plan {
    let mut p = Planner {
        ids: known.iter().map(|(k, v)| (k.clone(), v.person)).collect(),
        identified: known.values().map(|k| (k.person, k.identified)).collect(),
        plan: Plan::default(),
        props: HashMap::new(),
        new_person: Box::new(new_person),
    };
    for (e, distinct_id) in events {
        p.apply(e, distinct_id);
    }
    let merged_away: Vec<Uuid> = p.plan.merge.iter().map(|(from, _)| *from).collect();
    let mut props: Vec<_> =
        p.props.into_iter().filter(|(person, _)| !merged_away.contains(person)).map(|(k, (s, o))| (k, s, o)).collect();
    props.sort_by_key(|(k, _, _)| *k);
    p.plan.properties = props;
    p.plan
}

/// Every id an event may touch, for loading and locking before planning.
pub fn ids_of<'a>(e: &'a Event, distinct_id: &'a str) -> impl Iterator<Item = &'a str> {
    [Some(distinct_id), e.anonymous_id.as_deref(), e.user_id.as_deref(), e.previous_id.as_deref()].into_iter().flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, anon: Option<&str>, user: Option<&str>, extra: Value) -> Event {
        let mut raw = json!({"id": Uuid::now_v7(), "type": kind, "name": "x", "timestamp": "2026-12-01T10:00:00Z"});
        if let Some(a) = anon {
            raw["anonymous_id"] = json!(a);
        }
        if let Some(u) = user {
            raw["user_id"] = json!(u);
        }
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        protocol::validate::validate_event(raw).unwrap()
    }

    fn counter() -> impl FnMut() -> Uuid {
        let mut n = 0u128;
        move || {
            n += 1;
            Uuid::from_u128(n)
        }
    }

    fn run(events: &[Event], known: &[(&str, u128, bool)]) -> Plan {
        let known = known
            .iter()
            .map(|(k, p, i)| (k.to_string(), Known { person: Uuid::from_u128(*p + 1000), identified: *i }))
            .collect();
        plan(events.iter().map(|e| (e, e.distinct_id().unwrap())), &known, counter())
    }

    fn p(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn anonymous_events_then_identify_keep_one_person() {
        let plan = run(
            &[
                ev("track", Some("a"), None, json!({})),
                ev("identify", Some("a"), Some("u"), json!({"set": {"plan": "free"}})),
            ],
            &[],
        );
        assert_eq!(plan.create, vec![(p(1), true)]);
        assert_eq!(plan.map, vec![("a".into(), p(1)), ("u".into(), p(1))]);
        assert!(plan.merge.is_empty());
        assert_eq!(plan.properties, vec![(p(1), json!({"plan": "free"}).as_object().unwrap().clone(), Map::new())]);
    }

    #[test]
    fn identify_merges_an_anonymous_person_into_a_known_user() {
        // "a" is a stored anonymous person, "u" a stored identified one.
        let plan = run(&[ev("identify", Some("a"), Some("u"), json!({}))], &[("a", 1, false), ("u", 2, true)]);
        assert_eq!(plan.merge, vec![(p(1001), p(1002))]);
        assert_eq!(plan.refused_merges, 0);
    }

    #[test]
    fn two_identified_persons_are_never_merged_by_identify() {
        let plan = run(&[ev("identify", Some("a"), Some("u2"), json!({}))], &[("a", 1, true), ("u1", 1, true)]);
        assert!(plan.merge.is_empty());
        assert_eq!(plan.create, vec![(p(1), true)], "u2 gets a person of its own");
        assert_eq!(plan.map, vec![("u2".into(), p(1))], "the shared device's id stays with u1");
        let plan = run(&[ev("identify", Some("a"), Some("u2"), json!({}))], &[("a", 1, true), ("u2", 2, true)]);
        assert_eq!((plan.merge.len(), plan.refused_merges), (0, 1));
    }

    #[test]
    fn set_and_set_once() {
        let plan = run(
            &[
                ev("identify", Some("a"), Some("u"), json!({"set": {"plan": "free"}, "set_once": {"first": "x"}})),
                ev(
                    "identify",
                    Some("a"),
                    Some("u"),
                    json!({"set": {"plan": "pro"}, "set_once": {"first": "y", "ref": "g"}}),
                ),
            ],
            &[],
        );
        let (_, set, once) = &plan.properties[0];
        assert_eq!(Value::Object(set.clone()), json!({"plan": "pro"}));
        assert_eq!(Value::Object(once.clone()), json!({"first": "x", "ref": "g"}));
    }

    #[test]
    fn alias_joins_and_refuses_two_identified() {
        let plan = run(&[ev("alias", None, Some("new"), json!({"previous_id": "old"}))], &[("old", 1, false)]);
        assert_eq!(plan.map, vec![("new".into(), p(1001))]);
        let plan =
            run(&[ev("alias", None, Some("b"), json!({"previous_id": "a"}))], &[("a", 1, false), ("b", 2, true)]);
        assert_eq!(plan.merge, vec![(p(1001), p(1002))]);
        let plan = run(&[ev("alias", None, Some("b"), json!({"previous_id": "a"}))], &[("a", 1, true), ("b", 2, true)]);
        assert_eq!((plan.merge.len(), plan.refused_merges), (0, 1));
    }
}
