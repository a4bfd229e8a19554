//! The distinct id -> person mapping of a project held in memory, indexed by distinct-id number
//! (`sequence_distinct_ids.num`), and brought to each query's snapshot exactly.
//!
//! Why in memory: counting unique persons from the rollup sets maps every distinct-id number of
//! a month of days to its person; reading the mapping from PostgreSQL per query (a join of every
//! distinct id of the project) cost more than the rest of the query. The copy is loaded once per
//! process and then moved forward by deltas:
//!
//! * numbers are handed out as max + 1 under a per-project advisory lock held to commit, so the
//!   numbers a later snapshot sees beyond the copy's are exactly those `> max`;
//! * every change of `person_distinct_ids` is logged with its transaction (`person_map_log`,
//!   V15), so the changes a later snapshot sees and the copy's did not are exactly the log rows
//!   whose transaction the copy's snapshot did not see (`pg_visible_in_snapshot`).
//!
//! Refreshes of one copy are serialised, each in a snapshot taken after the previous one's, so
//! a copy only moves forward; a query keeps the `Arc` of the state its own snapshot produced.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use uuid::Uuid;

use super::StoreError;

/// No person: a number that is not (or not yet) a distinct id's.
pub const NONE: u32 = u32::MAX;

/// Whose a person number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A person id's.
    Person(Uuid),
    /// An unmapped distinct id's own (its number).
    Did(i32),
}

/// The mapping as of one snapshot.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    /// Person number of each distinct-id number (index), [`NONE`] for unused numbers.
    person_of: Vec<u32>,
    /// Person numbers of the persons met.
    persons: AHashMap<Uuid, u32>,
    /// Person numbers handed out (an unmapped distinct id is a person of its own).
    n_persons: u32,
    /// Per person number: whose it is.
    owners: Vec<Owner>,
    /// Highest distinct-id number loaded.
    max_num: i32,
    /// The snapshot (`pg_snapshot` text) this state is exact for.
    snapshot: String,
    /// When it was last brought forward.
    refreshed: Option<Instant>,
}

/// A copy not refreshed for this long is loaded whole again instead: the change log it would
/// need may have been pruned (the retention job keeps a day of it).
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);

impl IdMap {
    /// The person number of distinct-id number `num` ([`NONE`] when unknown).
    pub fn person_of(&self, num: u32) -> u32 {
        self.person_of.get(num as usize).copied().unwrap_or(NONE)
    }

    /// The person number of a person id, if the copy has met it.
    pub fn person(&self, id: &Uuid) -> Option<u32> {
        self.persons.get(id).copied()
    }

    /// Whose person number `p` is.
    pub fn owner(&self, p: u32) -> Option<Owner> {
        self.owners.get(p as usize).copied()
    }

    /// Person numbers handed out: every number is below this.
    pub fn n_persons(&self) -> u32 {
        self.n_persons
    }

    fn set(&mut self, num: i32, person: Option<Uuid>) {
        let Ok(i) = usize::try_from(num) else { return };
        if self.person_of.len() <= i {
            self.person_of.resize(i + 1, NONE);
        }
        let p = match person {
            Some(id) => match self.persons.get(&id) {
                Some(&p) => p,
                None => {
                    let p = self.new_person(Owner::Person(id));
                    self.persons.insert(id, p);
                    p
                }
            },
            // Its own person: keep the number it had while unmapped, else a new one.
            None => match self.person_of[i] {
                p if p != NONE && self.owners[p as usize] == Owner::Did(num) => p,
                _ => self.new_person(Owner::Did(num)),
            },
        };
        self.person_of[i] = p;
        self.max_num = self.max_num.max(num);
    }

    fn new_person(&mut self, owner: Owner) -> u32 {
        let p = self.n_persons;
        self.n_persons += 1;
        self.owners.push(owner);
        p
    }

    /// A mapping of (distinct-id number, person) pairs, for tests of its users.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(i32, Option<Uuid>)]) -> IdMap {
        let mut m = IdMap::default();
        for &(num, person) in pairs {
            m.set(num, person);
        }
        m
    }

    fn apply(&mut self, rows: &[tokio_postgres::Row]) -> Result<(), StoreError> {
        for r in rows {
            self.set(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(())
    }
}

/// The persons of raw events (days not rolled up yet) on top of a mapping: the mapping's numbers,
/// then numbers of their own for the persons it has not met, with their keys as the raw queries
/// spell them (`p:<person id>`, `d:<distinct id>`).
#[derive(Debug)]
pub struct Overlay<'m> {
    map: &'m IdMap,
    persons: AHashMap<Uuid, u32>,
    dids: AHashMap<String, u32>,
    keys: Vec<String>,
}

impl<'m> Overlay<'m> {
    /// No extra person yet.
    pub fn new(map: &'m IdMap) -> Self {
        Overlay { map, persons: AHashMap::new(), dids: AHashMap::new(), keys: Vec::new() }
    }

    /// The mapping it extends.
    pub fn map(&self) -> &'m IdMap {
        self.map
    }

    /// Person numbers handed out, the mapping's included: every number is below this.
    pub fn n_persons(&self) -> u32 {
        self.map.n_persons() + u32::try_from(self.keys.len()).unwrap_or(u32::MAX)
    }

    /// The key of an extra person (a number from the mapping's count on).
    pub fn extra_key(&self, p: u32) -> Option<&str> {
        self.keys.get(p.checked_sub(self.map.n_persons())? as usize).map(String::as_str)
    }

    fn extra(&mut self, key: String) -> u32 {
        let p = self.n_persons();
        self.keys.push(key);
        p
    }

    /// The person of a raw event: its person id, else its distinct id (numbered or not). An
    /// unmapped distinct id named like a mapped one is its own person, as in the raw queries.
    pub fn person(&mut self, person: Option<Uuid>, num: Option<i32>, distinct_id: &str) -> u32 {
        if let Some(id) = person {
            if let Some(p) = self.map.person(&id) {
                return p;
            }
            if let Some(&p) = self.persons.get(&id) {
                return p;
            }
            let p = self.extra(format!("p:{id}"));
            self.persons.insert(id, p);
            return p;
        }
        if let Some(p) = num.and_then(|n| u32::try_from(n).ok()).map(|n| self.map.person_of(n)) {
            if p != NONE {
                return p;
            }
        }
        if let Some(&p) = self.dids.get(distinct_id) {
            return p;
        }
        let p = self.extra(format!("d:{distinct_id}"));
        self.dids.insert(distinct_id.to_owned(), p);
        p
    }
}

/// One copy per (database, project).
type Copies = Mutex<HashMap<(Uuid, i64), Arc<tokio::sync::Mutex<Option<Arc<IdMap>>>>>>;
static COPIES: LazyLock<Copies> = LazyLock::new(Copies::default);

/// The copy of a project's mapping in the database `client` talks to: lock it, then start the
/// query's transaction, then [`refresh`] it in that transaction (see the module doc for why the
/// order matters).
pub async fn copy_of(
    client: &deadpool_postgres::Client,
    project_id: i64,
) -> Result<Arc<tokio::sync::Mutex<Option<Arc<IdMap>>>>, StoreError> {
    let instance: Uuid = client.query_one("SELECT id FROM nexus_instance", &[]).await?.try_get(0)?;
    let mut copies = COPIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(copies.entry((instance, project_id)).or_default().clone())
}

const BY_NUM: &str = "SELECT s.num, pd.person_id FROM sequence_distinct_ids s \
     LEFT JOIN person_distinct_ids pd ON pd.project_id = s.project_id AND pd.distinct_id = s.distinct_id \
     WHERE s.project_id = $1";

/// Brings `slot` to the snapshot of `tx` (REPEATABLE READ, its snapshot taken while `slot` is
/// locked) and returns that state.
pub async fn refresh(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    slot: &mut Option<Arc<IdMap>>,
) -> Result<Arc<IdMap>, StoreError> {
    let snapshot: String = tx.query_one("SELECT pg_current_snapshot()::text", &[]).await?.try_get(0)?;
    let stale = slot.as_ref().is_some_and(|m| m.refreshed.is_none_or(|t| t.elapsed() > MAX_AGE));
    if stale {
        *slot = None;
    }
    match slot {
        None => {
            let rows = tx.query(BY_NUM, &[&project_id]).await?;
            let mut map = IdMap { snapshot, refreshed: Some(Instant::now()), ..IdMap::default() };
            map.apply(&rows)?;
            *slot = Some(Arc::new(map));
        }
        Some(current) if current.snapshot != snapshot => {
            let added_sql = format!("{BY_NUM} AND s.num > $2");
            let changed_sql = format!(
                "{BY_NUM} AND s.distinct_id IN (SELECT l.distinct_id FROM person_map_log l \
                 WHERE l.project_id = $1 AND l.txid >= pg_snapshot_xmin($2::text::pg_snapshot) \
                 AND NOT pg_visible_in_snapshot(l.txid, $2::text::pg_snapshot))"
            );
            let added_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&project_id, &current.max_num];
            let changed_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&project_id, &current.snapshot];
            let (added, changed) =
                tokio::try_join!(tx.query(&added_sql, &added_params), tx.query(&changed_sql, &changed_params))?;
            let map = Arc::make_mut(current);
            map.apply(&added)?;
            map.apply(&changed)?;
            map.snapshot = snapshot;
            map.refreshed = Some(Instant::now());
        }
        Some(_) => {}
    }
    Ok(slot.clone().unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_persons_and_moves_ids_between_them() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut m = IdMap::default();
        m.set(1, None);
        m.set(2, Some(a));
        m.set(3, Some(a));
        m.set(5, None);
        assert_eq!(m.person_of(2), m.person_of(3));
        assert_ne!(m.person_of(1), m.person_of(2));
        assert_ne!(m.person_of(1), m.person_of(5));
        assert_eq!(m.person_of(4), NONE);
        assert_eq!(m.person_of(99), NONE);
        // An unmapped id joins a person, then the person is merged into another.
        m.set(1, Some(a));
        assert_eq!(m.person_of(1), m.person_of(2));
        m.set(1, Some(b));
        m.set(2, Some(b));
        assert_eq!(m.person_of(1), m.person(&b).unwrap());
        assert_eq!(m.person_of(3), m.person(&a).unwrap());
        // Unmapped again (its person deleted): a person of its own, shared with nobody.
        m.set(3, None);
        assert!(![m.person_of(1), m.person_of(2), m.person_of(5)].contains(&m.person_of(3)));
        assert!(m.n_persons() > m.person_of(3));
        assert_eq!(m.owner(m.person_of(3)), Some(Owner::Did(3)));
        assert_eq!(m.owner(m.person_of(1)), Some(Owner::Person(b)));
        assert_eq!(m.owner(m.person_of(5)), Some(Owner::Did(5)));
        assert_eq!(m.max_num, 5);
    }

    /// A raw event's person: by person id, else by its numbered distinct id, else by its distinct
    /// id; the mapping's numbers first, then numbers of their own for persons it has not met.
    #[test]
    fn raw_events_find_their_persons() {
        let (p1, p9) = (Uuid::from_u128(1), Uuid::from_u128(9));
        let map = IdMap::from_pairs(&[(1, Some(p1)), (2, None), (3, Some(p1))]);
        let mut o = Overlay::new(&map);
        let n = map.n_persons();
        let one = map.person(&p1).unwrap();
        let cases: [(Option<Uuid>, Option<i32>, &str, u32); 7] = [
            (Some(p1), Some(1), "a", one),
            (None, Some(2), "b", map.person_of(2)),
            (Some(p9), None, "x", n),
            (None, None, "y", n + 1),
            (Some(p9), Some(7), "z", n),
            (None, None, "y", n + 1),
            // An unmapped id named like a mapped one is its own person.
            (None, None, "a", n + 2),
        ];
        for (person, num, did, want) in cases {
            assert_eq!(o.person(person, num, did), want, "{person:?} {num:?} {did}");
        }
        assert_eq!(o.n_persons(), n + 3);
        assert_eq!(o.extra_key(n), Some("p:00000000-0000-0000-0000-000000000009"));
        assert_eq!(o.extra_key(n + 2), Some("d:a"));
        assert_eq!(o.extra_key(one), None);
    }
}
