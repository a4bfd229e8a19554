//! Funnels, retention, paths, stickiness and lifecycle through the real HTTP stack on PostgreSQL: scripted data
//! with known answers, an identity merge (anonymous events, then identify), out-of-order delivery, bad queries
//! answered 400 naming the field, and tenant isolation.

use serde_json::{json, Value};

use crate::support::{query, send_browser, TestApp};

/// A track event of `who` (`anon:<id>` or `user:<id>`) at `ts`.
fn ev(name: &str, ts: &str, who: &str, props: Value) -> Value {
    let mut e =
        json!({"id": uuid::Uuid::now_v7(), "type": "track", "name": name, "timestamp": ts, "properties": props});
    match who.split_once(':') {
        Some(("user", id)) => e["user_id"] = json!(id),
        Some((_, id)) => e["anonymous_id"] = json!(id),
        None => e["anonymous_id"] = json!(who),
    }
    e
}

fn page(ts: &str, anon: &str, path: &str) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(), "type": "page", "anonymous_id": anon, "session_id": format!("s-{anon}"),
        "timestamp": ts, "context": {"url": format!("https://shop.test{path}"), "path": path},
    })
}

fn counts(group: &Value) -> Vec<u64> {
    group["steps"].as_array().unwrap().iter().map(|s| s["count"].as_u64().unwrap()).collect()
}

fn field_of(v: &Value) -> &str {
    v["error"]["details"]["field"].as_str().unwrap_or("<no field>")
}

fn funnel_query() -> Value {
    json!({
        "date_range": {"from": "2026-03-02", "to": "2026-03-08"},
        "steps": [{"name": "view"}, {"name": "signup"}, {"name": "purchase"}],
        "window_days": 7,
        "breakdown": {"field": "event.properties.src"},
    })
}

/// Loads the scripted funnel into a project:
/// * `a` views anonymously, then identifies as `u1`, who signs up and buys: one person through all steps;
/// * `b` views, signs up and buys, but the purchase is delivered first;
/// * `c` views and signs up 8 days later, outside the 7-day window;
/// * `d` signs up without viewing: not in the funnel.
async fn load_funnel(app: &TestApp, write_key: &str) {
    send_browser(app, write_key, &[ev("view", "2026-03-02T10:00:00Z", "anon:a", json!({"src": "ads"}))]).await;
    let mut identify = ev("identify", "2026-03-02T10:30:00Z", "anon:a", json!({}));
    identify["type"] = json!("identify");
    identify["user_id"] = json!("u1");
    send_browser(app, write_key, &[identify]).await;
    send_browser(
        app,
        write_key,
        &[
            ev("signup", "2026-03-02T11:00:00Z", "user:u1", json!({})),
            ev("purchase", "2026-03-02T13:00:00Z", "user:u1", json!({})),
        ],
    )
    .await;
    send_browser(app, write_key, &[ev("purchase", "2026-03-03T14:00:00Z", "anon:b", json!({}))]).await;
    send_browser(
        app,
        write_key,
        &[
            ev("view", "2026-03-03T10:00:00Z", "anon:b", json!({"src": "ads"})),
            ev("signup", "2026-03-03T12:00:00Z", "anon:b", json!({})),
        ],
    )
    .await;
    send_browser(
        app,
        write_key,
        &[
            ev("view", "2026-03-02T09:00:00Z", "anon:c", json!({"src": "seo"})),
            ev("signup", "2026-03-10T09:00:00Z", "anon:c", json!({})),
            ev("signup", "2026-03-04T09:00:00Z", "anon:d", json!({})),
        ],
    )
    .await;
}

#[tokio::test]
async fn funnel_with_identity_merge_out_of_order_delivery_and_window() {
    let app = TestApp::start("analysis_funnel").await;
    let (w, r) = (app.project.write_key.clone(), app.project.read_key.clone());
    load_funnel(&app, &w).await;

    let (s, v) = query(&app, "/v1/query/funnel", &r, &funnel_query()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(counts(&v["total"]), [3, 2, 2], "{v}");
    let step1 = &v["total"]["steps"][1];
    // a: 1 h (anonymous view -> identified signup), b: 2 h
    assert_eq!(step1["median_time_to_convert_secs"], json!(5400.0));
    assert_eq!(step1["avg_time_to_convert_secs"], json!(5400.0));
    assert_eq!(step1["drop_off"], json!(1));
    assert_eq!(step1["dropped"].as_array().unwrap().len(), 1);
    assert_eq!(v["total"]["steps"][2]["median_time_to_convert_secs"], json!(7200.0));
    assert!((v["total"]["steps"][2]["conversion_from_first"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let converted = v["total"]["steps"][2]["converted"].as_array().unwrap();
    assert_eq!(converted.len(), 2);
    // the merged person is listed once, under its person id
    assert!(converted.iter().all(|p| p.as_str().unwrap().starts_with("p:")), "{v}");

    let groups: Vec<(String, Vec<u64>)> = v["breakdowns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["breakdown"].as_str().unwrap_or("<none>").to_owned(), counts(g)))
        .collect();
    assert_eq!(groups, [("ads".to_owned(), vec![2, 2, 2]), ("seo".to_owned(), vec![1, 0, 0])]);

    // A 9-day window lets c convert too; strict order stops a at the view (the identify sits between view and
    // signup), while b's three events are adjacent.
    let mut q = funnel_query();
    q["window_days"] = json!(9);
    let (_, v) = query(&app, "/v1/query/funnel", &r, &q).await;
    assert_eq!(counts(&v["total"]), [3, 3, 2], "{v}");
    let mut q = funnel_query();
    q["order"] = json!("strict");
    let (_, v) = query(&app, "/v1/query/funnel", &r, &q).await;
    assert_eq!(counts(&v["total"]), [3, 1, 1], "{v}");
    // any order: d's lonely signup is still not two steps
    let mut q = funnel_query();
    q["order"] = json!("any_order");
    let (_, v) = query(&app, "/v1/query/funnel", &r, &q).await;
    assert_eq!(counts(&v["total"]), [4, 2, 2], "{v}");

    // An exclusion between view and signup (the identify event) ends a's attempt at the view.
    let mut q = funnel_query();
    q["exclusions"] = json!([{"name": "identify", "from_step": 0, "to_step": 1}]);
    let (_, v) = query(&app, "/v1/query/funnel", &r, &q).await;
    assert_eq!(counts(&v["total"]), [3, 1, 1], "{v}");

    // Step filters and the common filters compile through the shared filter compiler.
    let mut q = funnel_query();
    q["steps"][0]["filters"] = json!({"field": "event.properties.src", "op": "eq", "value": "seo"});
    let (_, v) = query(&app, "/v1/query/funnel", &r, &q).await;
    assert_eq!(counts(&v["total"]), [1, 0, 0], "{v}");
}

#[tokio::test]
async fn retention_stickiness_lifecycle_and_paths() {
    let app = TestApp::start("analysis_cohorts").await;
    let (w, r) = (app.project.write_key.clone(), app.project.read_key.clone());
    send_browser(
        &app,
        &w,
        &[
            ev("view", "2026-03-02T08:00:00Z", "p1", json!({})),
            ev("view", "2026-03-03T08:00:00Z", "p1", json!({})),
            ev("view", "2026-03-05T23:59:00Z", "p1", json!({})),
            ev("view", "2026-03-03T12:00:00Z", "p2", json!({})),
            ev("view", "2026-03-04T00:00:00Z", "p2", json!({})),
            ev("view", "2026-02-20T12:00:00Z", "p3", json!({})),
            ev("view", "2026-03-03T12:00:00Z", "p3", json!({})),
            page("2026-03-02T08:00:00Z", "p1", "/"),
            page("2026-03-02T08:01:00Z", "p1", "/pricing"),
            page("2026-03-02T08:02:00Z", "p1", "/pricing"),
            page("2026-03-02T08:03:00Z", "p1", "/signup"),
            page("2026-03-03T08:00:00Z", "p2", "/"),
            page("2026-03-03T08:01:00Z", "p2", "/pricing"),
            page("2026-03-03T08:02:00Z", "p2", "/docs"),
            page("2026-03-03T08:00:00Z", "p3", "/blog"),
            page("2026-03-03T08:01:00Z", "p3", "/"),
        ],
    )
    .await;
    let range = json!({"from": "2026-03-02", "to": "2026-03-05"});
    let rows = |v: &Value| -> Vec<Vec<u64>> {
        v["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["values"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect())
            .collect()
    };

    let q = json!({"date_range": range, "interval": "day", "start": {"name": "view"}});
    let (s, v) = query(&app, "/v1/query/retention", &r, &q).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rows(&v), [vec![1, 1, 0, 1], vec![1, 1, 0], vec![0, 0], vec![0]], "{v}");
    assert_eq!(v["cohorts"][0]["period"], json!("2026-03-02"));
    let q = json!({"date_range": range, "start": {"name": "view"}, "return": {"name": "view"}, "mode": "recurring"});
    let (_, v) = query(&app, "/v1/query/retention", &r, &q).await;
    assert_eq!(rows(&v), [vec![1, 1, 0, 1], vec![3, 1, 1], vec![1, 0], vec![1]], "{v}");
    assert!((v["cohorts"][1]["percentages"][1].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);

    let q = json!({"date_range": range, "event": {"name": "view"}});
    let (s, v) = query(&app, "/v1/query/stickiness", &r, &q).await;
    assert_eq!(s, 200, "{v}");
    let exactly: Vec<u64> = v["rows"].as_array().unwrap().iter().map(|x| x["persons"].as_u64().unwrap()).collect();
    assert_eq!(exactly, [1, 1, 1, 0], "{v}");

    let (s, v) = query(&app, "/v1/query/lifecycle", &r, &q).await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<[u64; 4]> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| ["new", "returning", "resurrecting", "dormant"].map(|k| b[k].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [[1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 2], [0, 0, 1, 1]], "{v}");

    let q = json!({"date_range": range, "anchor": "/", "steps": 2});
    let (s, v) = query(&app, "/v1/query/paths", &r, &q).await;
    assert_eq!(s, 200, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    let mut links: Vec<String> = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let (a, b) =
                (&nodes[l["source"].as_u64().unwrap() as usize], &nodes[l["target"].as_u64().unwrap() as usize]);
            format!(
                "{}:{} -> {}:{} = {}",
                a["step"],
                a["value"].as_str().unwrap(),
                b["step"],
                b["value"].as_str().unwrap(),
                l["persons"]
            )
        })
        .collect();
    links.sort();
    assert_eq!(links, ["0:/ -> 1:/pricing = 2", "1:/pricing -> 2:/docs = 1", "1:/pricing -> 2:/signup = 1"], "{v}");
    assert_eq!(v["persons"], json!(3));
    let q = json!({"date_range": range, "anchor": "/", "direction": "previous", "steps": 1});
    let (_, v) = query(&app, "/v1/query/paths", &r, &q).await;
    assert_eq!(v["links"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["nodes"][1]["value"], json!("/blog"), "{v}");
}

#[tokio::test]
async fn bad_analysis_queries_get_400_naming_the_field() {
    let app = TestApp::start("analysis_bad").await;
    let key = app.project.read_key.clone();
    let range = json!("last_7_days");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/query/funnel", json!({"date_range": range, "steps": [{"name": "a"}]}), "steps"),
        ("/v1/query/funnel", json!({"date_range": range, "steps": [{"name": "a"}, {}]}), "steps[1]"),
        (
            "/v1/query/funnel",
            json!({"date_range": range, "steps": [{"name": "a"}, {"name": "b"}], "window_days": 0}),
            "window_days",
        ),
        (
            "/v1/query/funnel",
            json!({"date_range": range, "steps": [{"name": "a"}, {"name": "b", "filters": {"field": "event.nope", "op": "eq", "value": 1}}]}),
            "steps[1].filters.field",
        ),
        (
            "/v1/query/funnel",
            json!({"date_range": range, "steps": [{"name": "a"}, {"name": "b"}], "exclusions": [{"name": "x", "from_step": 1, "to_step": 1}]}),
            "exclusions[0]",
        ),
        (
            "/v1/query/funnel",
            json!({"date_range": range, "steps": [{"name": "a"}, {"name": "b"}], "colour": 1}),
            "colour",
        ),
        (
            "/v1/query/funnel",
            json!({"date_range": range, "steps": [{"name": "a"}, {"name": "b"}], "compare": "previous_period"}),
            "compare",
        ),
        ("/v1/query/paths", json!({"date_range": range, "top_k": 0}), "top_k"),
        ("/v1/query/paths", json!({"date_range": range, "direction": "sideways"}), "direction"),
        ("/v1/query/retention", json!({"date_range": range, "start": {"name": "a"}, "mode": "sometimes"}), "mode"),
        (
            "/v1/query/lifecycle",
            json!({"date_range": range, "event": {"filters": {"field": "event.properties.a'b", "op": "is_set"}}}),
            "event.filters.field",
        ),
    ];
    for (path, body, field) in cases {
        let (s, v) = query(&app, path, &key, &body).await;
        assert_eq!((s, field_of(&v)), (400, field), "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid_query"));
    }
}

#[tokio::test]
async fn a_read_key_sees_its_own_project_only() {
    let app = TestApp::start("analysis_tenants").await;
    let a = &app.project;
    let b = nexus_origin::store::projects::create_project(&app.pool, "B", "UTC", &[]).await.unwrap();
    load_funnel(&app, &b.write_key).await;
    send_browser(
        &app,
        &b.write_key,
        &[page("2026-03-03T08:00:00Z", "c", "/"), page("2026-03-03T08:01:00Z", "c", "/x")],
    )
    .await;

    let range = json!({"from": "2026-03-01", "to": "2026-03-12"});
    let who = json!({"field": "event.distinct_id", "op": "eq", "value": ["a", "b", "c", "u1"]});
    let funnel = funnel_query();
    let bodies = [
        ("/v1/query/funnel", funnel.clone()),
        ("/v1/query/retention", json!({"date_range": range, "start": {"name": "view"}, "mode": "recurring"})),
        ("/v1/query/paths", json!({"date_range": range})),
        ("/v1/query/stickiness", json!({"date_range": range, "event": {"name": "signup"}})),
        ("/v1/query/lifecycle", json!({"date_range": range, "event": {"name": "signup"}})),
    ];
    // B's key sees its data (so the checks below are not vacuous), A's key sees nothing, whatever the filters.
    let nonzero = |path: &str, v: &Value| -> bool {
        match path {
            "/v1/query/funnel" => counts(&v["total"])[0] > 0,
            "/v1/query/retention" => v["cohorts"].as_array().unwrap().iter().any(|c| c["size"].as_u64().unwrap() > 0),
            "/v1/query/paths" => v["persons"].as_u64().unwrap() > 0,
            "/v1/query/stickiness" => v["rows"].as_array().unwrap().iter().any(|r| r["persons"].as_u64().unwrap() > 0),
            _ => v["buckets"].as_array().unwrap().iter().any(|b| b["new"].as_u64().unwrap() > 0),
        }
    };
    for (path, body) in &bodies {
        let (s, v) = query(&app, path, &b.read_key, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert!(nonzero(path, &v), "{path} with B's key: {v}");
        for filters in [None, Some(who.clone()), Some(json!({"not": who.clone()}))] {
            let mut body = body.clone();
            if let Some(f) = filters {
                body["filters"] = f;
            }
            let (s, v) = query(&app, path, &a.read_key, &body).await;
            assert_eq!(s, 200, "{path}: {v}");
            assert!(!nonzero(path, &v), "{path} with A's key leaked B's data: {v}");
            assert!(!v.to_string().contains("u1"), "{path}: {v}");
        }
    }
}

// ---- Randomised: the HTTP answers against a brute-force oracle written here, independent of query/ ----

mod oracle {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
    use chrono_tz::Europe::Berlin;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use serde_json::json;

    use super::counts;
    use crate::support::TestApp;
    use crate::support::{query, send_browser};

    const NAMES: [&str; 4] = ["view", "signup", "buy", "other"];

    /// One generated event: whose, when (minutes after the start of 2026-03-24 UTC), what.
    #[derive(Debug, Clone)]
    struct Gen {
        person: usize,
        minute: i64,
        name: usize,
    }

    #[derive(Debug, Clone)]
    struct Case {
        events: Vec<Gen>,
        /// Per person: identified as `u<i>` at this minute (events from then on carry the user id), or never.
        identified_at: Vec<Option<i64>>,
        window_days: i64,
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 24, 0, 0, 0).unwrap()
    }

    fn case() -> impl Strategy<Value = Case> {
        let persons = 6usize;
        (
            prop::collection::vec(
                (0..persons, 0i64..12 * 1440, prop::sample::select(vec![0usize, 0, 1, 1, 2, 3])),
                10..70,
            ),
            prop::collection::vec(prop::option::of(0i64..12 * 1440), persons),
            1i64..4,
        )
            .prop_map(|(ev, identified_at, window_days)| Case {
                events: ev.into_iter().map(|(person, minute, name)| Gen { person, minute, name }).collect(),
                identified_at,
                window_days,
            })
    }

    /// Berlin calendar days of the range, 2026-03-25 to 2026-03-31 (spring forward on the 29th).
    fn days() -> Vec<NaiveDate> {
        (25..=31).map(|d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap()).collect()
    }

    fn berlin_day(t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&Berlin).date_naive()
    }

    /// Each person's events as (time, id, name), sorted the way the store breaks ties (time, then event id).
    type Timeline = Vec<(DateTime<Utc>, uuid::Uuid, usize)>;

    fn funnel_oracle(
        people: &BTreeMap<usize, Timeline>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        w: Duration,
    ) -> Vec<u64> {
        let mut out = vec![0u64; 3];
        for tl in people.values() {
            // Greedy earliest match from every possible entry: optimal for an ordered funnel without exclusions.
            let mut best = 0;
            for (i, (t0, _, n)) in tl.iter().enumerate() {
                if *n != 0 || *t0 < from || *t0 >= to {
                    continue;
                }
                let mut level = 1;
                let mut at = i;
                for step in 1..3 {
                    match (at + 1..tl.len()).find(|&j| tl[j].2 == step && tl[j].0 - *t0 <= w) {
                        Some(j) => {
                            level += 1;
                            at = j;
                        }
                        None => break,
                    }
                }
                best = best.max(level);
            }
            for c in out.iter_mut().take(best) {
                *c += 1;
            }
        }
        out
    }

    fn retention_oracle(people: &BTreeMap<usize, Timeline>) -> Vec<Vec<u64>> {
        let days = days();
        days.iter()
            .enumerate()
            .map(|(c, day)| {
                (0..days.len() - c)
                    .map(|k| {
                        people
                            .values()
                            .filter(|tl| tl.iter().filter(|e| e.2 == 0).map(|e| berlin_day(e.0)).min() == Some(*day))
                            .filter(|tl| k == 0 || tl.iter().any(|e| e.2 == 2 && berlin_day(e.0) == days[c + k]))
                            .count() as u64
                    })
                    .collect()
            })
            .collect()
    }

    fn stickiness_oracle(people: &BTreeMap<usize, Timeline>) -> Vec<u64> {
        let days: BTreeSet<NaiveDate> = days().into_iter().collect();
        let mut out = vec![0u64; days.len()];
        for tl in people.values() {
            let active: BTreeSet<NaiveDate> =
                tl.iter().filter(|e| e.2 == 0).map(|e| berlin_day(e.0)).filter(|d| days.contains(d)).collect();
            if !active.is_empty() {
                out[active.len() - 1] += 1;
            }
        }
        out
    }

    async fn check(app: &TestApp, case: &Case) -> Result<(), TestCaseError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = nexus_origin::store::projects::create_project(&app.pool, &format!("o{n}"), "Europe/Berlin", &[])
            .await
            .unwrap();
        let mut people: BTreeMap<usize, Timeline> = BTreeMap::new();
        let mut identifies = Vec::new();
        for (i, at) in case.identified_at.iter().enumerate() {
            if let Some(m) = at {
                let ts = start() + Duration::minutes(*m);
                identifies.push(json!({
                    "id": uuid::Uuid::now_v7(), "type": "identify", "name": "identify", "anonymous_id": format!("a{i}"),
                    "user_id": format!("u{i}"), "timestamp": ts.to_rfc3339(),
                }));
            }
        }
        let mut events = Vec::new();
        for g in &case.events {
            let ts = start() + Duration::minutes(g.minute);
            let id = uuid::Uuid::now_v7();
            let mut e = json!({"id": id, "type": "track", "name": NAMES[g.name], "timestamp": ts.to_rfc3339()});
            // Before the identify the person is anonymous; from then on the SDK sends the user id.
            match case.identified_at[g.person] {
                Some(m) if g.minute >= m => e["user_id"] = json!(format!("u{}", g.person)),
                _ => e["anonymous_id"] = json!(format!("a{}", g.person)),
            }
            events.push(e);
            people.entry(g.person).or_default().push((ts, id, g.name));
        }
        for tl in people.values_mut() {
            tl.sort();
        }
        // Identities first, then the events in reverse order in small batches: delivery order is not time order.
        if !identifies.is_empty() {
            send_browser(app, &p.write_key, &identifies).await;
        }
        events.reverse();
        for chunk in events.chunks(7) {
            send_browser(app, &p.write_key, chunk).await;
        }

        let range = json!({"from": "2026-03-25", "to": "2026-03-31"});
        let from = Berlin.with_ymd_and_hms(2026, 3, 25, 0, 0, 0).unwrap().with_timezone(&Utc);
        let to = Berlin.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap().with_timezone(&Utc);
        let q = json!({"date_range": range, "window_days": case.window_days,
                       "steps": [{"name": "view"}, {"name": "signup"}, {"name": "buy"}]});
        let (s, v) = query(app, "/v1/query/funnel", &p.read_key, &q).await;
        prop_assert_eq!(s, 200, "{}", v);
        prop_assert_eq!(
            counts(&v["total"]),
            funnel_oracle(&people, from, to, Duration::days(case.window_days)),
            "funnel {:?}",
            case
        );

        let q = json!({"date_range": range, "start": {"name": "view"}, "return": {"name": "buy"}});
        let (s, v) = query(app, "/v1/query/retention", &p.read_key, &q).await;
        prop_assert_eq!(s, 200, "{}", v);
        let got: Vec<Vec<u64>> = v["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["values"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect())
            .collect();
        prop_assert_eq!(got, retention_oracle(&people), "retention {:?}", case);

        let q = json!({"date_range": range, "event": {"name": "view"}});
        let (s, v) = query(app, "/v1/query/stickiness", &p.read_key, &q).await;
        prop_assert_eq!(s, 200, "{}", v);
        let got: Vec<u64> = v["rows"].as_array().unwrap().iter().map(|r| r["persons"].as_u64().unwrap()).collect();
        prop_assert_eq!(got, stickiness_oracle(&people), "stickiness {:?}", case);
        Ok(())
    }

    /// Random persons, some identified midway, events delivered newest first, a Berlin week with a 23-hour day:
    /// funnel counts, first-time retention and stickiness agree with the oracle.
    #[test]
    fn funnel_retention_and_stickiness_match_the_oracle() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let app = rt.block_on(TestApp::start("analysis_oracle"));
        let mut runner = TestRunner::new(Config { cases: 16, failure_persistence: None, ..Config::default() });
        runner.run(&case(), |c| rt.block_on(check(&app, &c))).unwrap();
    }
}
