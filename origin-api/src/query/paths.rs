//! Paths: the most common events or pages after (or before) a given one, as Sankey nodes and links.
//!
//! Pure maths over each person's sequence of values (event names or page paths), sorted by time.
//!
//! Definitions (the oracle in the tests follows them literally):
//! * Consecutive repeats of one value are collapsed (a reload is not a step).
//! * Next: the path starts at the person's first occurrence of the anchor (or at their first value without
//!   an anchor) and takes up to `steps` further values. Previous: the same on the reversed sequence, so it
//!   starts at the last occurrence and walks back in time. Persons without the anchor have no path.
//! * Node = (step index, value); step 0 is the anchor. At every step, the `top_k` values with the most
//!   persons (ties by value) keep their name; the others become [`OTHER`].
//! * A node counts the persons whose path passes through it; a link counts the persons who go from one node to
//!   the next.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::filter::{Scope, SqlBuilder};
use super::funnel::{common_where, refuse_compare, scan_sequences, sequences_fit, stream_rows, PersonGroups, Source};
use super::model::{Common, QueryError};
use crate::store::sequences::NameCache;

/// The value that stands for the values beyond the top K of a step.
pub const OTHER: &str = "$other";
/// Most steps a path may have after its anchor.
pub const MAX_STEPS: usize = 20;

/// Which way from the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What persons do after the anchor.
    #[default]
    Next,
    /// What persons did before the anchor.
    Previous,
}

/// Settings of a paths query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    /// Where paths start; `None` starts at each person's first value (or last, for [`Direction::Previous`]).
    pub anchor: Option<String>,
    /// Which way to walk.
    pub direction: Direction,
    /// Steps after the anchor, `1..=MAX_STEPS`.
    pub steps: usize,
    /// Values kept by name per step.
    pub top_k: usize,
}

/// A node of the Sankey chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Step index (0 = the anchor).
    pub step: usize,
    /// Event name or page, or [`OTHER`].
    pub value: String,
    /// Persons passing through this node.
    pub persons: u64,
}

/// A link of the Sankey chart, between two nodes given by their index in [`PathsResult::nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Index of the node at step `s`.
    pub source: usize,
    /// Index of the node at step `s + 1`.
    pub target: usize,
    /// Persons going from source to target.
    pub persons: u64,
}

/// Nodes (ordered by step, then persons descending, then value) and links (ordered by source, target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathsResult {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The links.
    pub links: Vec<Link>,
}

/// The path of one person: the anchor and up to `steps` values after (or before) it, repeats collapsed; empty
/// when the person never did the anchor.
pub fn person_path<'a>(values: &[&'a str], cfg: &PathsConfig) -> Vec<&'a str> {
    let mut seq: Vec<&str> = Vec::with_capacity(values.len());
    for &v in values {
        if seq.last() != Some(&v) {
            seq.push(v);
        }
    }
    if cfg.direction == Direction::Previous {
        seq.reverse();
    }
    let start = match &cfg.anchor {
        None => 0,
        Some(a) => match seq.iter().position(|v| v == a) {
            Some(i) => i,
            None => return vec![],
        },
    };
    seq.into_iter().skip(start).take(cfg.steps + 1).collect()
}

/// Computes the Sankey nodes and links; each item of `persons` is one person's values in time order.
pub fn paths(persons: &[Vec<String>], cfg: &PathsConfig) -> PathsResult {
    let all: Vec<Vec<&str>> = persons
        .iter()
        .map(|vs| person_path(&vs.iter().map(String::as_str).collect::<Vec<_>>(), cfg))
        .filter(|p| !p.is_empty())
        .collect();
    summarize(&all, cfg.top_k)
}

/// Nodes and links of persons' paths (from [`person_path`]), keeping the `top_k` values of each step by name.
pub fn summarize<S: AsRef<str>>(paths: &[Vec<S>], top_k: usize) -> PathsResult {
    let all: Vec<Vec<&str>> = paths.iter().map(|p| p.iter().map(AsRef::as_ref).collect()).collect();
    // Persons per raw (step, value), to pick the top K of each step.
    let mut raw: HashMap<(usize, &str), u64> = HashMap::new();
    for p in &all {
        for (s, v) in p.iter().enumerate() {
            *raw.entry((s, v)).or_default() += 1;
        }
    }
    let mut per_step: BTreeMap<usize, Vec<(&str, u64)>> = BTreeMap::new();
    for (&(s, v), &n) in &raw {
        per_step.entry(s).or_default().push((v, n));
    }
    let mut kept: HashSet<(usize, &str)> = HashSet::new();
    for (s, mut vs) in per_step {
        vs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (v, _) in vs.into_iter().take(top_k) {
            kept.insert((s, v));
        }
    }
    let label = |s: usize, v: &str| -> String {
        if kept.contains(&(s, v)) {
            v.to_owned()
        } else {
            OTHER.to_owned()
        }
    };

    let mut node_count: HashMap<(usize, String), u64> = HashMap::new();
    // (from node, to node) -> persons
    let mut link_count = HashMap::new();
    for p in &all {
        let labels: Vec<(usize, String)> = p.iter().enumerate().map(|(s, v)| (s, label(s, v))).collect();
        for n in &labels {
            *node_count.entry(n.clone()).or_default() += 1;
        }
        for w in labels.windows(2) {
            *link_count.entry((w[0].clone(), w[1].clone())).or_insert(0u64) += 1;
        }
    }
    let mut nodes: Vec<Node> =
        node_count.into_iter().map(|((step, value), persons)| Node { step, value, persons }).collect();
    nodes.sort_by(|a, b| a.step.cmp(&b.step).then(b.persons.cmp(&a.persons)).then_with(|| a.value.cmp(&b.value)));
    let index: HashMap<(usize, &str), usize> =
        nodes.iter().enumerate().map(|(i, n)| ((n.step, n.value.as_str()), i)).collect();
    let mut links: Vec<Link> = link_count
        .into_iter()
        .filter_map(|((a, b), persons)| {
            Some(Link { source: *index.get(&(a.0, a.1.as_str()))?, target: *index.get(&(b.0, b.1.as_str()))?, persons })
        })
        .collect();
    links.sort_by_key(|l| (l.source, l.target));
    PathsResult { nodes, links }
}

// ---- The query ----

/// Most values kept by name per step.
pub const MAX_TOP_K: usize = 50;

/// What a path is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathValues {
    /// Page paths of page views (`events.path` of `page` events).
    #[default]
    Pages,
    /// Event names of every event.
    Events,
}

fn default_steps() -> usize {
    5
}

fn default_top_k() -> usize {
    5
}

/// The paths part of `POST /v1/query/paths`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsQuery {
    /// The page or event name paths start from (or end at, for `previous`); each person's first one when absent.
    #[serde(default)]
    pub anchor: Option<String>,
    /// `next` (default) or `previous`.
    #[serde(default)]
    pub direction: Direction,
    /// Steps after the anchor (1 to 20, default 5).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Values kept by name per step (1 to 50, default 5).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// `pages` (default) or `events`.
    #[serde(default)]
    pub values: PathValues,
}

/// The answer of `POST /v1/query/paths`.
#[derive(Debug, Clone, Serialize)]
pub struct PathsResponse {
    /// Zone of the range.
    pub timezone: String,
    /// Start of the range.
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the range.
    pub to: chrono::DateTime<chrono::Utc>,
    /// What the values are.
    pub values: PathValues,
    /// Which way the paths go.
    pub direction: Direction,
    /// Persons with a path.
    pub persons: u64,
    /// Sankey nodes.
    pub nodes: Vec<Node>,
    /// Sankey links (indexes into `nodes`).
    pub links: Vec<Link>,
}

/// Runs a paths query: one statement returns each person's values in the range ordered by person and time; each
/// person's path is cut as their rows end, so only paths (at most `steps + 1` values) are kept.
/// Without filters the values come from the per-person sequences.
pub async fn run(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &PathsQuery,
) -> Result<PathsResponse, QueryError> {
    run_from(pool, project_id, common, q, Source::Auto).await
}

/// [`run`] reading from the given source.
pub async fn run_from(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &PathsQuery,
    source: Source,
) -> Result<PathsResponse, QueryError> {
    refuse_compare(common, "paths")?;
    if common.breakdown.is_some() {
        return Err(QueryError::invalid("breakdown", "breakdown is not supported by paths"));
    }
    if !(1..=MAX_STEPS).contains(&q.steps) {
        return Err(QueryError::invalid("steps", format!("steps is 1 to {MAX_STEPS}")));
    }
    if !(1..=MAX_TOP_K).contains(&q.top_k) {
        return Err(QueryError::invalid("top_k", format!("top_k is 1 to {MAX_TOP_K}")));
    }
    if q.anchor.as_ref().is_some_and(|a| a.is_empty() || a.len() > 2048) {
        return Err(QueryError::invalid("anchor", "anchor is 1 to 2048 bytes"));
    }
    let mut b = SqlBuilder::new();
    let person = b.person_key(Scope::Events);
    let pid = b.bind(project_id);
    let from = b.bind(common.range.from);
    let to = b.bind(common.range.to);
    let (value, kind) = match q.values {
        PathValues::Pages => ("e.path", " AND e.event_type = 'page' AND e.path IS NOT NULL"),
        PathValues::Events => ("e.name", ""),
    };
    let tail = common_where(&mut b, common)?;
    let sql = format!(
        "SELECT {person} AS person, {value} AS v FROM events e{joins} \
         WHERE e.project_id = {pid} AND e.timestamp >= {from} AND e.timestamp < {to}{kind}{tail} \
         ORDER BY 1, e.timestamp, e.event_id",
        joins = b.joins(Scope::Events),
    );
    let cfg = PathsConfig { anchor: q.anchor.clone(), direction: q.direction, steps: q.steps, top_k: q.top_k };
    let mut all: Vec<Vec<String>> = Vec::new();
    let mut groups: PersonGroups<String> = PersonGroups::default();
    let mut add = |values: &[&str]| {
        let path = person_path(values, &cfg);
        if !path.is_empty() {
            all.push(path.into_iter().map(str::to_owned).collect());
        }
    };
    if sequences_fit(common, source) {
        let (from_us, to_us) = (common.range.from.timestamp_micros(), common.range.to.timestamp_micros());
        let (include_bots, pages) = (common.include_bots, q.values == PathValues::Pages);
        let scan = crate::store::sequences::Scan {
            project_id,
            from: common.range.from,
            until: common.range.to,
            earlier: None,
            paths: pages,
        };
        // Values shared per number: a page view costs a reference count, not a string.
        let mut interned: NameCache<Option<Arc<str>>> = NameCache::default();
        scan_sequences(
            pool,
            &scan,
            |e| {
                if e.bot && !include_bots || e.ts_us < from_us || e.ts_us >= to_us {
                    return None;
                }
                if pages {
                    let path = e.path?;
                    interned.of(e.path_num, path, |p| Some(Arc::from(p)))
                } else {
                    interned.get(&e, |n| Some(Arc::from(n)))
                }
            },
            |_person, values| {
                if !values.is_empty() {
                    let refs: Vec<&str> = values.iter().map(|(_, v)| &**v).collect();
                    add(&refs);
                }
            },
        )
        .await?;
    } else {
        let mut done = |_person: String, values: Vec<String>| {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            add(&refs);
        };
        stream_rows(pool, &sql, &b, |row| {
            let person: &str = row.try_get(0)?;
            let v: String = row.try_get(1)?;
            groups.push(person, v, &mut done);
            Ok(())
        })
        .await?;
        groups.flush(&mut done);
    }
    let r = summarize(&all, q.top_k);
    Ok(PathsResponse {
        timezone: common.timezone.clone(),
        from: common.range.from,
        to: common.range.to,
        values: q.values,
        direction: q.direction,
        persons: all.len() as u64,
        nodes: r.nodes,
        links: r.links,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seqs(spec: &[&str]) -> Vec<Vec<String>> {
        spec.iter().map(|s| s.split_whitespace().map(str::to_owned).collect()).collect()
    }

    fn cfg(anchor: Option<&str>, direction: Direction, steps: usize, top_k: usize) -> PathsConfig {
        PathsConfig { anchor: anchor.map(str::to_owned), direction, steps, top_k }
    }

    /// Renders links as "step:value -> step:value = n" for one-line expectations.
    fn render(r: &PathsResult) -> Vec<String> {
        r.links
            .iter()
            .map(|l| {
                let (a, b) = (&r.nodes[l.source], &r.nodes[l.target]);
                format!("{}:{} -> {}:{} = {}", a.step, a.value, b.step, b.value, l.persons)
            })
            .collect()
    }

    fn check(spec: &[&str], c: PathsConfig, expected: &[&str]) {
        let r = paths(&seqs(spec), &c);
        let mut got = render(&r);
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{spec:?}");
    }

    #[test]
    fn next_and_previous() {
        let data = ["/ /pricing /signup", "/ /pricing /pricing /docs", "/blog / /pricing", "/docs"];
        check(
            &data,
            cfg(Some("/"), Direction::Next, 2, 5),
            &["0:/ -> 1:/pricing = 3", "1:/pricing -> 2:/signup = 1", "1:/pricing -> 2:/docs = 1"],
        );
        check(
            &data,
            cfg(Some("/pricing"), Direction::Previous, 2, 5),
            &["0:/pricing -> 1:/ = 3", "1:/ -> 2:/blog = 1"],
        );
        check(&data, cfg(Some("/"), Direction::Next, 1, 5), &["0:/ -> 1:/pricing = 3"]);
        // no anchor: from each person's first value
        check(&data, cfg(None, Direction::Next, 1, 5), &["0:/ -> 1:/pricing = 2", "0:/blog -> 1:/ = 1"]);
        // top 1 per step: the rest is "other"
        check(
            &["a b", "a b", "a c", "a d"],
            cfg(Some("a"), Direction::Next, 1, 1),
            &["0:a -> 1:b = 2", "0:a -> 1:$other = 2"],
        );
    }

    #[test]
    fn node_counts() {
        let r = paths(&seqs(&["a b c", "a b", "x"]), &cfg(Some("a"), Direction::Next, 3, 5));
        let nodes: Vec<(usize, &str, u64)> = r.nodes.iter().map(|n| (n.step, n.value.as_str(), n.persons)).collect();
        assert_eq!(nodes, [(0, "a", 2), (1, "b", 2), (2, "c", 1)]);
    }

    /// Naive oracle: builds each path by index arithmetic on the raw sequence and counts with sorted vectors.
    fn oracle(persons: &[Vec<String>], c: &PathsConfig) -> Vec<String> {
        let mut paths: Vec<Vec<String>> = Vec::new();
        for p in persons {
            let mut d: Vec<String> = Vec::new();
            for (i, v) in p.iter().enumerate() {
                if i == 0 || p[i - 1] != *v {
                    d.push(v.clone());
                }
            }
            let order: Vec<usize> =
                if c.direction == Direction::Next { (0..d.len()).collect() } else { (0..d.len()).rev().collect() };
            let Some(at) = order.iter().position(|&i| c.anchor.as_ref().is_none_or(|a| d[i] == *a)) else { continue };
            paths.push(order[at..].iter().take(c.steps + 1).map(|&i| d[i].clone()).collect());
        }
        for s in 0..=c.steps {
            let mut counts: Vec<(String, u64)> = Vec::new();
            for p in paths.iter().filter(|p| p.len() > s) {
                match counts.iter_mut().find(|(v, _)| *v == p[s]) {
                    Some(e) => e.1 += 1,
                    None => counts.push((p[s].clone(), 1)),
                }
            }
            counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<String> = counts.into_iter().take(c.top_k).map(|x| x.0).collect();
            for p in paths.iter_mut().filter(|p| p.len() > s) {
                if !top.contains(&p[s]) {
                    p[s] = OTHER.to_string();
                }
            }
        }
        let mut links: Vec<(usize, String, String)> = Vec::new();
        for p in &paths {
            for s in 0..p.len().saturating_sub(1) {
                links.push((s, p[s].clone(), p[s + 1].clone()));
            }
        }
        links.sort();
        let mut rendered = Vec::new();
        let mut i = 0;
        while i < links.len() {
            let j = (i..links.len()).find(|&j| links[j] != links[i]).unwrap_or(links.len());
            let (s, a, b) = &links[i];
            rendered.push(format!("{}:{} -> {}:{} = {}", s, a, s + 1, b, j - i));
            i = j;
        }
        rendered.sort();
        rendered
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn matches_oracle(
            persons in prop::collection::vec(prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d", "e"]), 0..10), 0..12),
            anchor in prop::option::of(prop::sample::select(vec!["a", "b"])),
            previous in any::<bool>(),
            steps in 1usize..5,
            top_k in 1usize..4,
        ) {
            let persons: Vec<Vec<String>> = persons.into_iter().map(|p| p.into_iter().map(str::to_owned).collect()).collect();
            let c = cfg(anchor, if previous { Direction::Previous } else { Direction::Next }, steps, top_k);
            let r = paths(&persons, &c);
            let mut got = render(&r);
            got.sort();
            prop_assert_eq!(got, oracle(&persons, &c));
            // flow is conserved: what leaves a node never exceeds what passes through it
            for (i, n) in r.nodes.iter().enumerate() {
                let out: u64 = r.links.iter().filter(|l| l.source == i).map(|l| l.persons).sum();
                prop_assert!(out <= n.persons);
                prop_assert!(r.nodes.iter().filter(|m| m.step == n.step && m.value != OTHER).count() <= top_k);
            }
        }
    }
}
