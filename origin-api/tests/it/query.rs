//! The query API through the real HTTP stack on PostgreSQL: trends per calendar day in a DST
//! zone, bots, breakdowns, comparison, session metrics, top lists, bad queries answered 400
//! naming the field, injection strings matched verbatim, and tenant isolation.

use serde_json::{json, Value};

use crate::support::{query, read, send, TestApp, BOT_UA, BROWSER_UA};

/// An event at `ts` for `anon` in `session`.
pub fn ev(name: &str, ts: &str, anon: &str, session: Option<&str>, props: Value) -> Value {
    let mut e = json!({
        "id": uuid::Uuid::now_v7(), "type": "track", "name": name, "anonymous_id": anon,
        "timestamp": ts, "properties": props,
        "context": {"url": "https://shop.test/", "path": "/"},
    });
    if let Some(s) = session {
        e["session_id"] = json!(s);
    }
    e
}

fn page(ts: &str, anon: &str, session: &str, path: &str) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(), "type": "page", "name": "page", "anonymous_id": anon, "session_id": session,
        "timestamp": ts, "context": {"url": format!("https://shop.test{path}"), "path": path},
    })
}

async fn berlin_project(app: &TestApp, name: &str) -> nexus_origin::store::projects::NewProject {
    nexus_origin::store::projects::create_project(&app.pool, name, "Europe/Berlin", &[]).await.unwrap()
}

fn labels(v: &Value) -> Vec<String> {
    v["buckets"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_owned()).collect()
}

fn field_of(v: &Value) -> &str {
    v["error"]["details"]["field"].as_str().unwrap_or("<no field>")
}

#[tokio::test]
async fn trends_per_berlin_day_across_dst_with_empty_buckets_and_bots() {
    let app = TestApp::start("query_trends_dst").await;
    let p = berlin_project(&app, "Berlin").await;
    send(
        &app,
        &p.write_key,
        &[
            ev("a", "2026-03-28T10:00:00Z", "anon-a", Some("s1"), json!({})), // 28 March
            ev("a", "2026-03-28T23:30:00Z", "anon-a", Some("s2"), json!({})), // 00:30 on 29 March (CET)
            ev("a", "2026-03-29T21:30:00Z", "anon-b", Some("s3"), json!({})), // 23:30 on 29 March (CEST)
            ev("a", "2026-03-29T22:30:00Z", "anon-b", Some("s3"), json!({})), // 00:30 on 30 March
        ],
        BROWSER_UA,
    )
    .await;
    send(&app, &p.write_key, &[ev("a", "2026-03-29T10:00:00Z", "crawler", None, json!({}))], BOT_UA).await;
    let q = json!({"date_range": {"from": "2026-03-27", "to": "2026-03-30"},
                   "metrics": ["count", "unique_persons", "unique_sessions"]});
    let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(labels(&v), ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]);
    assert_eq!(v["buckets"][2]["start"], "2026-03-28T23:00:00Z");
    assert_eq!(v["buckets"][2]["end"], "2026-03-29T22:00:00Z", "the DST day has 23 hours");
    assert_eq!(v["date_range"], json!({"from": "2026-03-27T00:00:00+01:00", "to": "2026-03-31T00:00:00+02:00"}));
    let m = &v["series"][0]["metrics"];
    assert_eq!(m["count"], json!([0, 1, 2, 1]), "{v}");
    assert_eq!(m["unique_persons"], json!([0, 1, 2, 1]));
    assert_eq!(m["unique_sessions"], json!([0, 1, 2, 1]));
    assert!(v["series"][0].get("breakdown").is_none());

    let mut with_bots = q.clone();
    with_bots["include_bots"] = json!(true);
    let (_, v) = query(&app, "/v1/query/trends", &p.read_key, &with_bots).await;
    assert_eq!(v["series"][0]["metrics"]["count"], json!([0, 1, 3, 1]));

    // The same instants in UTC days.
    let mut utc = q.clone();
    utc["timezone"] = json!("UTC");
    let (_, v) = query(&app, "/v1/query/trends", &p.read_key, &utc).await;
    assert_eq!(v["series"][0]["metrics"]["count"], json!([0, 2, 2, 0]));

    // Hours of the DST day: 23 buckets, 02:00 skipped.
    let hours = json!({"date_range": {"from": "2026-03-29", "to": "2026-03-29"}, "interval": "hour"});
    let (_, v) = query(&app, "/v1/query/trends", &p.read_key, &hours).await;
    assert_eq!(labels(&v).len(), 23);
    assert_eq!(
        v["series"][0]["metrics"]["count"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).sum::<i64>(),
        2
    );
    assert_eq!(v["series"][0]["metrics"]["count"][0], 1, "00:30 CET");
    assert_eq!(v["series"][0]["metrics"]["count"][22], 1, "23:30 CEST");
}

#[tokio::test]
async fn property_metrics_breakdown_and_previous_period() {
    let app = TestApp::start("query_breakdown").await;
    let p = berlin_project(&app, "Shop").await;
    let mut events = Vec::new();
    // Previous week (16..22 March): 2 events. This week (23..29 March): plans pro x3, free x2, team x1, none x1.
    events.push(ev("buy", "2026-03-17T12:00:00Z", "u1", None, json!({"plan": "pro", "amount": 5})));
    events.push(ev("buy", "2026-03-18T12:00:00Z", "u2", None, json!({"plan": "free", "amount": 1})));
    for (i, (plan, amount)) in
        [("pro", 10), ("pro", 20), ("pro", 60), ("free", 0), ("free", 2), ("team", 7)].iter().enumerate()
    {
        events.push(ev(
            "buy",
            &format!("2026-03-2{}T12:00:00Z", 3 + i % 3),
            &format!("u{i}"),
            None,
            json!({"plan": plan, "amount": amount}),
        ));
    }
    events.push(ev("buy", "2026-03-24T12:00:00Z", "u9", None, json!({"amount": "not a number"})));
    send(&app, &p.write_key, &events, BROWSER_UA).await;

    let q = json!({
        "date_range": {"from": "2026-03-23", "to": "2026-03-29"}, "interval": "week",
        "metrics": ["count", {"op": "sum", "field": "event.properties.amount"}, {"op": "avg", "field": "event.properties.amount"},
                    {"op": "p50", "field": "event.properties.amount"}, {"op": "max", "field": "event.properties.amount"}],
        "breakdown": {"field": "event.properties.plan", "limit": 2},
        "compare": "previous_period",
    });
    let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(labels(&v), ["2026-03-23"]);
    let series = v["series"].as_array().unwrap();
    let keys: Vec<&Value> = series.iter().map(|s| &s["breakdown"]).collect();
    assert_eq!(
        keys,
        [
            &json!({"value": "pro", "other": false}),
            &json!({"value": "free", "other": false}),
            &json!({"value": null, "other": true})
        ]
    );
    assert_eq!(series[0]["metrics"]["count"], json!([3]));
    assert_eq!(series[0]["metrics"]["sum(event.properties.amount)"], json!([90.0]));
    assert_eq!(series[0]["metrics"]["avg(event.properties.amount)"], json!([30.0]));
    assert_eq!(series[0]["metrics"]["p50(event.properties.amount)"], json!([20.0]));
    assert_eq!(series[1]["metrics"]["sum(event.properties.amount)"], json!([2.0]));
    // "other": team (7) and the event without a plan (amount not a number: skipped by aggregates).
    assert_eq!(series[2]["metrics"]["count"], json!([2]));
    assert_eq!(series[2]["metrics"]["max(event.properties.amount)"], json!([7.0]));
    let prev = &v["compare"];
    assert_eq!(prev["date_range"], json!({"from": "2026-03-16T00:00:00+01:00", "to": "2026-03-23T00:00:00+01:00"}));
    assert_eq!(prev["series"][0]["metrics"]["count"], json!([1]), "pro in the previous week");
    assert_eq!(prev["series"][1]["metrics"]["count"], json!([1]), "free in the previous week");
    assert_eq!(prev["series"][2]["metrics"]["count"], json!([0]));
    assert_eq!(prev["series"][2]["metrics"]["avg(event.properties.amount)"], json!([null]));

    // Filters: gt on a numeric property, a list, not.
    let count_with = |filters: Value| {
        let app = &app;
        let key = p.read_key.clone();
        async move {
            let q = json!({"date_range": {"from": "2026-03-23", "to": "2026-03-29"}, "interval": "month", "filters": filters});
            let (s, v) = query(app, "/v1/query/trends", &key, &q).await;
            assert_eq!(s, 200, "{v}");
            v["series"][0]["metrics"]["count"][0].as_i64().unwrap()
        }
    };
    assert_eq!(count_with(json!({"field": "event.properties.amount", "op": "gt", "value": 5})).await, 4);
    assert_eq!(count_with(json!({"field": "event.properties.amount", "op": "lt", "value": 5})).await, 2);
    assert_eq!(count_with(json!({"field": "event.properties.plan", "op": "eq", "value": ["free", "team"]})).await, 3);
    assert_eq!(
        count_with(json!({"field": "event.properties.plan", "op": "neq", "value": "pro"})).await,
        4,
        "unset counts as not equal"
    );
    assert_eq!(count_with(json!({"field": "event.properties.plan", "op": "is_not_set"})).await, 1);
    assert_eq!(count_with(json!({"not": {"field": "event.properties.plan", "op": "contains", "value": "r"}})).await, 2);
    assert_eq!(
        count_with(json!({"or": [{"field": "event.properties.plan", "op": "regex", "value": "^t"},
                                 {"and": [{"field": "event.properties.plan", "op": "eq", "value": "pro"},
                                          {"field": "event.properties.amount", "op": "gt", "value": 15}]}]}))
        .await,
        3
    );
}

#[tokio::test]
async fn session_metrics_and_top_lists() {
    let app = TestApp::start("query_sessions_top").await;
    let p = berlin_project(&app, "Pages").await;
    send(
        &app,
        &p.write_key,
        &[
            page("2026-03-10T10:00:00Z", "v1", "s1", "/"),
            page("2026-03-10T10:01:00Z", "v1", "s1", "/pricing"),
            page("2026-03-10T11:00:00Z", "v2", "s2", "/"),
            page("2026-03-11T09:00:00Z", "v3", "s3", "/docs"),
            page("2026-03-11T09:00:30Z", "v3", "s3", "/pricing"),
            page("2026-03-11T09:02:00Z", "v3", "s3", "/signup"),
        ],
        BROWSER_UA,
    )
    .await;
    send(&app, &p.write_key, &[page("2026-03-10T12:00:00Z", "bot", "s-bot", "/")], BOT_UA).await;
    let q = json!({"date_range": {"from": "2026-03-10", "to": "2026-03-11"},
                   "metrics": ["visits", "bounce_rate", "avg_duration", "pages_per_session", "count"]});
    let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
    assert_eq!(s, 200, "{v}");
    let m = &v["series"][0]["metrics"];
    assert_eq!(m["visits"], json!([2, 1]), "the bot's session is left out");
    assert_eq!(m["bounce_rate"], json!([0.5, 0.0]));
    assert_eq!(m["avg_duration"], json!([30.0, 120.0]));
    assert_eq!(m["pages_per_session"], json!([1.5, 3.0]));
    assert_eq!(m["count"], json!([3, 3]));

    let (s, v) = query(
        &app,
        "/v1/query/trends",
        &p.read_key,
        &json!({"date_range": {"from": "2026-03-10", "to": "2026-03-11"}, "metrics": ["visits"],
                "filters": {"field": "session.entry_path", "op": "eq", "value": "/"}, "breakdown": {"field": "session.exit_path"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["series"][0]["breakdown"]["value"], "/");
    assert_eq!(v["series"][0]["metrics"]["visits"], json!([1, 0]));
    assert_eq!(v["series"][1]["breakdown"]["value"], "/pricing");

    let range = json!({"from": "2026-03-10", "to": "2026-03-11"});
    let (s, v) = query(
        &app,
        "/v1/query/top",
        &p.read_key,
        &json!({"date_range": range, "dimension": "event.path", "limit": 2,
                "filters": {"field": "event.type", "op": "eq", "value": "page"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["metrics"], json!(["unique_persons", "count"]));
    assert_eq!(
        v["rows"],
        json!([{"value": "/", "metrics": {"unique_persons": 2, "count": 2}},
               {"value": "/pricing", "metrics": {"unique_persons": 2, "count": 2}}])
    );
    assert_eq!(v["other"], json!({"unique_persons": 1, "count": 2}), "/docs and /signup, both v3");
    let (s, v) =
        query(&app, "/v1/query/top", &p.read_key, &json!({"date_range": range, "dimension": "session.entry_path"}))
            .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([{"value": "/", "metrics": {"visits": 2}}, {"value": "/docs", "metrics": {"visits": 1}}])
    );
    assert!(v.get("other").is_none());
    let (_, v) =
        query(&app, "/v1/query/top", &p.read_key, &json!({"date_range": range, "dimension": "session.exit_path"}))
            .await;
    assert_eq!(v["rows"][0], json!({"value": "/", "metrics": {"visits": 1}}), "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 3);
    let (_, v) =
        query(&app, "/v1/query/top", &p.read_key, &json!({"date_range": range, "dimension": "session.channel"})).await;
    assert_eq!(v["rows"].as_array().unwrap().iter().map(|r| r["metrics"]["visits"].as_i64().unwrap()).sum::<i64>(), 3);
}

#[tokio::test]
async fn bad_queries_get_400_naming_the_field() {
    let app = TestApp::start("query_bad").await;
    let key = app.project.read_key.clone();
    let leaf = |f: &str, op: &str, v: Value| json!({"date_range": "last_7_days", "filters": {"and": [{"field": "event.name", "op": "eq", "value": "x"}, {"field": f, "op": op, "value": v}]}});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/query/trends", json!({"date_range": "last_7_days", "colour": "red"}), "colour"),
        ("/v1/query/trends", json!({"date_range": "last_7_days", "project_id": 1}), "project_id"),
        ("/v1/query/trends", json!({"metrics": ["count"]}), "date_range"),
        ("/v1/query/trends", json!({"date_range": {"from": "2026-03-02", "to": "2026-03-01"}}), "date_range.to"),
        ("/v1/query/trends", leaf("event.name", "like", json!("x")), "filters.and[1].op"),
        ("/v1/query/trends", leaf("event.colour", "eq", json!("x")), "filters.and[1].field"),
        ("/v1/query/trends", leaf("event.properties.pl an$'", "eq", json!("x")), "filters.and[1].field"),
        ("/v1/query/trends", leaf("event.properties.plan') OR 1=1; --", "eq", json!("x")), "filters.and[1].field"),
        ("/v1/query/trends", leaf("person.properties.a\"b", "is_set", Value::Null), "filters.and[1].field"),
        ("/v1/query/trends", leaf("event.path", "gt", json!(1)), "filters.and[1].value"),
        ("/v1/query/trends", json!({"date_range": "last_7_days", "metrics": ["count", "sessions"]}), "metrics[1]"),
        (
            "/v1/query/trends",
            json!({"date_range": "last_7_days", "metrics": ["visits"], "filters": {"field": "event.name", "op": "eq", "value": "x"}}),
            "filters.field",
        ),
        (
            "/v1/query/trends",
            json!({"date_range": "last_7_days", "metrics": ["visits"], "breakdown": {"field": "event.path"}}),
            "breakdown.field",
        ),
        ("/v1/query/trends", json!({"date_range": "last_90_days", "interval": "minute"}), "interval"),
        ("/v1/query/trends", json!({"date_range": "today", "timezone": "Europe/Nowhere"}), "timezone"),
        ("/v1/query/top", json!({"date_range": "today"}), "dimension"),
        ("/v1/query/top", json!({"date_range": "today", "dimension": "event.nope"}), "dimension"),
        ("/v1/query/top", json!({"date_range": "today", "dimension": "event.path", "limit": 0}), "limit"),
        (
            "/v1/query/top",
            json!({"date_range": "today", "dimension": "event.path", "compare": "previous_period"}),
            "compare",
        ),
    ];
    for (path, body, field) in cases {
        let (s, v) = query(&app, path, &key, &body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str(), field_of(&v)),
            (400, Some("invalid_query"), field),
            "{body} -> {v}"
        );
    }
    let res = app
        .http
        .post(app.url("/v1/query/trends"))
        .header("authorization", format!("Bearer {key}"))
        .body("{")
        .send()
        .await
        .unwrap();
    let (s, v) = read(res).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("malformed_json")));
    let ok = json!({"date_range": "today"});
    let res = app.http.post(app.url("/v1/query/trends")).body(ok.to_string()).send().await.unwrap();
    assert_eq!(read(res).await.0, 401);
    let (s, v) = query(&app, "/v1/query/trends", &app.project.write_key, &ok).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("insufficient_scope")));
    let (s, _) = query(&app, "/v1/query/trends", &app.project.read_key, &ok).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn injection_strings_are_stored_and_matched_verbatim() {
    let app = TestApp::start("query_injection").await;
    let p = berlin_project(&app, "Hostile").await;
    let evil_name = "'; DROP TABLE events; --";
    let evil_value = "' OR 1=1 --";
    send(
        &app,
        &p.write_key,
        &[
            ev(evil_name, "2026-03-10T10:00:00Z", "a", None, json!({"q": evil_value})),
            ev("plain", "2026-03-10T10:00:00Z", "b", None, json!({"q": "100%_sure"})),
            ev("plain", "2026-03-10T10:00:00Z", "c", None, json!({"q": "100 sure"})),
        ],
        BROWSER_UA,
    )
    .await;
    let count = |filters: Value| {
        let app = &app;
        let key = p.read_key.clone();
        async move {
            let q = json!({"date_range": {"from": "2026-03-10", "to": "2026-03-10"}, "filters": filters});
            let (s, v) = query(app, "/v1/query/trends", &key, &q).await;
            assert_eq!(s, 200, "{v}");
            v["series"][0]["metrics"]["count"][0].as_i64().unwrap()
        }
    };
    assert_eq!(count(json!({"field": "event.name", "op": "eq", "value": evil_name})).await, 1);
    assert_eq!(count(json!({"field": "event.properties.q", "op": "eq", "value": evil_value})).await, 1);
    assert_eq!(count(json!({"field": "event.properties.q", "op": "eq", "value": "' OR '1'='1"})).await, 0);
    // LIKE wildcards mean nothing to contains.
    assert_eq!(count(json!({"field": "event.properties.q", "op": "contains", "value": "%_"})).await, 1);
    assert_eq!(count(json!({"field": "event.properties.q", "op": "contains", "value": "_"})).await, 1);
    // A hostile person property key is refused before any SQL, and the table is still there.
    let (s, _) = query(
        &app,
        "/v1/query/trends",
        &p.read_key,
        &json!({"date_range": "today", "breakdown": {"field": "person.properties.x'); DROP TABLE persons; --"}}),
    )
    .await;
    assert_eq!(s, 400);
    let (_, v) = query(
        &app,
        "/v1/query/top",
        &p.read_key,
        &json!({"date_range": {"from": "2026-03-10", "to": "2026-03-10"}, "dimension": "event.name"}),
    )
    .await;
    assert_eq!(v["rows"][1], json!({"value": evil_name, "metrics": {"unique_persons": 1, "count": 1}}), "{v}");
}

#[tokio::test]
async fn a_read_key_sees_its_own_project_only() {
    let app = TestApp::start("query_tenants").await;
    let a = berlin_project(&app, "A").await;
    let b = &app.project;
    send(
        &app,
        &a.write_key,
        &[ev("signup", "2026-03-10T10:00:00Z", "alice", Some("sa"), json!({"plan": "a"}))],
        BROWSER_UA,
    )
    .await;
    let mut b_events = Vec::new();
    for i in 0..5 {
        b_events.push(ev("signup", "2026-03-10T10:00:00Z", &format!("bob{i}"), Some("sb"), json!({"plan": "b"})));
        b_events.push(page("2026-03-10T10:00:00Z", &format!("bob{i}"), &format!("sb{i}"), "/b-only"));
    }
    send(&app, &b.write_key, &b_events, BROWSER_UA).await;
    let range = json!({"from": "2026-03-01", "to": "2026-03-31"});
    let filters = [
        Value::Null,
        json!({"field": "event.distinct_id", "op": "eq", "value": "bob0"}),
        json!({"field": "event.properties.plan", "op": "eq", "value": "b"}),
        json!({"or": [{"field": "event.name", "op": "is_set"}, {"field": "event.name", "op": "is_not_set"}]}),
        json!({"field": "session.entry_path", "op": "eq", "value": "/b-only"}),
        json!({"field": "event.path", "op": "regex", "value": ".*"}),
    ];
    for f in filters {
        let mut q = json!({"date_range": range, "interval": "month", "metrics": ["count", "unique_persons", "unique_sessions"],
                           "breakdown": {"field": "event.distinct_id"}, "include_bots": true});
        let mut top = json!({"date_range": range, "dimension": "event.distinct_id", "include_bots": true});
        if !f.is_null() {
            q["filters"] = f.clone();
            top["filters"] = f.clone();
        }
        let (s, v) = query(&app, "/v1/query/trends", &a.read_key, &q).await;
        assert_eq!(s, 200, "{v}");
        let text = v.to_string();
        assert!(!text.contains("bob"), "{f}: {text}");
        for series in v["series"].as_array().unwrap() {
            assert_eq!(series["breakdown"]["value"], "alice", "{f}");
            assert_eq!(series["metrics"]["count"], json!([1]));
        }
        let (s, v) = query(&app, "/v1/query/top", &a.read_key, &top).await;
        assert_eq!(s, 200, "{v}");
        assert!(!v.to_string().contains("bob"), "{f}: {v}");
        let (_, v) =
            query(&app, "/v1/query/top", &a.read_key, &json!({"date_range": range, "dimension": "session.entry_path"}))
                .await;
        assert!(!v.to_string().contains("/b-only"), "{v}");
    }
    // And the other way round: B's key never sees alice.
    let (_, v) = query(
        &app,
        "/v1/query/top",
        &b.read_key,
        &json!({"date_range": range, "dimension": "event.distinct_id", "limit": 100}),
    )
    .await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 5, "{v}");
    assert!(!v.to_string().contains("alice"));
}

#[tokio::test]
async fn statement_timeout_and_result_limit_are_enforced() {
    use nexus_origin::query::filter::{begin_read, query_rows, SqlBuilder, MAX_RESULT_ROWS};
    use nexus_origin::query::model::QueryError;
    let app = TestApp::start("query_guards").await;
    let mut client = app.pool.get().await.unwrap();
    {
        let tx = begin_read(&mut client).await.unwrap();
        let timeout: String = tx.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
        assert_eq!(timeout, "15s");
        let err = tx.batch_execute("INSERT INTO projects (name) VALUES ('x')").await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("25006"), "read only: {err}");
    }
    {
        let tx = begin_read(&mut client).await.unwrap();
        tx.batch_execute("SET LOCAL statement_timeout = 50").await.unwrap();
        let err = query_rows(&tx, "SELECT pg_sleep(2)", &SqlBuilder::new()).await.unwrap_err();
        assert!(matches!(err, QueryError::Timeout), "{err:?}");
    }
    let tx = begin_read(&mut client).await.unwrap();
    let mut b = SqlBuilder::new();
    let sql =
        format!("SELECT g FROM generate_series(1, {}::int) g", b.bind(i32::try_from(MAX_RESULT_ROWS).unwrap() + 5));
    let err = query_rows(&tx, &sql, &b).await.unwrap_err();
    assert!(matches!(err, QueryError::TooLarge(n) if n == MAX_RESULT_ROWS), "{err:?}");
    let ok = query_rows(&tx, "SELECT g FROM generate_series(1, 10) g", &SqlBuilder::new()).await.unwrap();
    assert_eq!(ok.len(), 10);
}
