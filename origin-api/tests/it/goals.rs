//! Goals through the real HTTP stack on PostgreSQL: saved definitions (admin key to write, read
//! key to read), a scripted dataset with known conversions and rates per day, a breakdown with
//! "other", bad definitions answered 400 naming the field, and tenant isolation.

use serde_json::{json, Value};

use crate::support::{read, send_browser, TestApp};

async fn call(app: &TestApp, method: reqwest::Method, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).header("authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    read(req.send().await.unwrap()).await
}

async fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> (u16, Value) {
    call(app, reqwest::Method::POST, path, key, Some(body)).await
}

fn field_of(v: &Value) -> &str {
    v["error"]["details"]["field"].as_str().unwrap_or("<no field>")
}

fn track(name: &str, ts: &str, anon: &str, props: Value) -> Value {
    json!({"id": uuid::Uuid::now_v7(), "type": "track", "name": name, "timestamp": ts, "anonymous_id": anon,
           "properties": props})
}

fn page(ts: &str, anon: &str, path: &str, src: &str) -> Value {
    json!({"id": uuid::Uuid::now_v7(), "type": "page", "timestamp": ts, "anonymous_id": anon,
           "properties": {"src": src}, "context": {"url": format!("https://shop.test{path}"), "path": path}})
}

/// Two days, four persons:
/// * `a` (ads), day 1: views `/` and `/blog/one`, signs up twice on the pro plan;
/// * `b` (ads), day 1: views `/pricing`, signs up on the free plan;
/// * `c` (seo), day 1: views `/blog/two`; day 2: views `/blogger` (not under `/blog/`);
/// * `d` (seo), day 2: signs up on the pro plan, views `/blog/x/y`;
/// * a bot signs up on the pro plan on day 1 (left out).
async fn load(app: &TestApp, write_key: &str) {
    send_browser(
        app,
        write_key,
        &[
            page("2026-03-02T09:00:00Z", "a", "/", "ads"),
            page("2026-03-02T09:05:00Z", "a", "/blog/one", "ads"),
            track("signup", "2026-03-02T09:10:00Z", "a", json!({"plan": "pro", "src": "ads"})),
            track("signup", "2026-03-02T09:20:00Z", "a", json!({"plan": "pro", "src": "ads"})),
            page("2026-03-02T10:00:00Z", "b", "/pricing", "ads"),
            track("signup", "2026-03-02T10:10:00Z", "b", json!({"plan": "free", "src": "ads"})),
            page("2026-03-02T11:00:00Z", "c", "/blog/two", "seo"),
        ],
    )
    .await;
    send_browser(
        app,
        write_key,
        &[
            page("2026-03-03T08:00:00Z", "c", "/blogger", "seo"),
            track("signup", "2026-03-03T09:00:00Z", "d", json!({"plan": "pro", "src": "seo"})),
            page("2026-03-03T09:30:00Z", "d", "/blog/x/y", "seo"),
        ],
    )
    .await;
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={write_key}")))
        .header("content-type", "application/json")
        .header("user-agent", "Googlebot/2.1 (+http://www.google.com/bot.html)")
        .body(
            json!({"batch": [track("signup", "2026-03-02T12:00:00Z", "bot", json!({"plan": "pro", "src": "ads"}))]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

/// (conversions, converting persons, unique persons, rates) of a series.
fn numbers(s: &Value) -> (Value, Value, Value, Vec<f64>) {
    let rates = s["conversion_rate"].as_array().unwrap().iter().map(|r| (r.as_f64().unwrap() * 1e6).round() / 1e6);
    (s["conversions"].clone(), s["converting_persons"].clone(), s["unique_persons"].clone(), rates.collect())
}

#[tokio::test]
async fn goals_are_saved_and_count_conversions_and_rates() {
    let app = TestApp::start("goals_conversions").await;
    let p = app.project.clone();
    load(&app, &p.write_key).await;
    let pro = json!({"name": "Pro signup", "event": "signup",
                     "filters": {"field": "event.properties.plan", "op": "eq", "value": "pro"}});
    let (status, g1) = post(&app, "/v1/goals", &p.admin_key, &pro).await;
    assert_eq!(status, 201, "{g1}");
    assert_eq!(g1["definition"], json!({"event": "signup", "filters": pro["filters"]}));
    let (status, g2) = post(&app, "/v1/goals", &p.admin_key, &json!({"name": "Blog", "page_path": "/blog/*"})).await;
    assert_eq!(status, 201, "{g2}");
    let (status, listed) = call(&app, reqwest::Method::GET, "/v1/goals", &p.read_key, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["goals"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Pro signup", "Blog"]);

    // Every saved goal when `goals` is absent.
    let q = json!({"date_range": {"from": "2026-03-02", "to": "2026-03-03"}});
    let (status, body) = post(&app, "/v1/query/goals", &p.read_key, &q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["buckets"].as_array().unwrap().len(), 2);
    let goals = body["goals"].as_array().unwrap();
    assert_eq!((goals[0]["id"].clone(), goals[0]["name"].clone()), (g1["id"].clone(), json!("Pro signup")));
    let s = &goals[0]["series"][0];
    assert!(s.get("breakdown").is_none());
    // Persons per day: a, b, c, then c, d (the bot is left out).
    assert_eq!(numbers(s), (json!([2, 1]), json!([1, 1]), json!([3, 2]), vec![0.333333, 0.5]));
    assert_eq!(
        s["totals"],
        json!({"conversions": 3, "converting_persons": 2, "unique_persons": 4, "conversion_rate": 0.5})
    );
    let s = &goals[1]["series"][0];
    assert_eq!(numbers(s), (json!([2, 1]), json!([2, 1]), json!([3, 2]), vec![0.666667, 0.5]));
    assert_eq!(s["totals"]["conversion_rate"], json!(0.75));

    // A saved goal by id next to an inline definition, per day, broken down by source (top 1 + other).
    let q = json!({
        "date_range": {"from": "2026-03-02", "to": "2026-03-03"},
        "goals": [g1["id"], {"event": "signup"}],
        "breakdown": {"field": "event.properties.src", "limit": 1},
    });
    let (status, body) = post(&app, "/v1/query/goals", &p.read_key, &q).await;
    assert_eq!(status, 200, "{body}");
    let inline = &body["goals"][1];
    assert_eq!((inline.get("id"), inline["name"].clone()), (None, json!("signup")));
    let series = body["goals"][0]["series"].as_array().unwrap();
    let keys: Vec<Value> = series.iter().map(|s| s["breakdown"].clone()).collect();
    // ads has two converting persons (a, b), seo one (d): seo falls into "other".
    assert_eq!(keys, vec![json!({"value": "ads", "other": false}), json!({"value": null, "other": true})]);
    assert_eq!(numbers(&series[0]), (json!([2, 0]), json!([1, 0]), json!([2, 0]), vec![0.5, 0.0]));
    assert_eq!(numbers(&series[1]), (json!([0, 1]), json!([0, 1]), json!([1, 2]), vec![0.0, 0.5]));
    assert_eq!(
        series[1]["totals"],
        json!({"conversions": 1, "converting_persons": 1, "unique_persons": 2, "conversion_rate": 0.5})
    );
    let all = &inline["series"][0];
    assert_eq!(numbers(all), (json!([3, 0]), json!([2, 0]), json!([2, 0]), vec![1.0, 0.0]));

    // Common filters apply to persons and conversions alike.
    let q = json!({
        "date_range": {"from": "2026-03-02", "to": "2026-03-03"}, "interval": "week",
        "goals": [{"page_path": "/blog/*"}],
        "filters": {"field": "event.properties.src", "op": "eq", "value": "seo"},
    });
    let (_, body) = post(&app, "/v1/query/goals", &p.read_key, &q).await;
    assert_eq!(
        body["goals"][0]["series"][0]["totals"],
        json!({"conversions": 2, "converting_persons": 2, "unique_persons": 2, "conversion_rate": 1.0}),
        "{body}"
    );

    // Deleting: admin key only, then gone.
    let path = format!("/v1/goals/{}", g2["id"]);
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &p.read_key, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &p.admin_key, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &p.admin_key, None).await;
    assert_eq!(status, 404);
    let (_, listed) = call(&app, reqwest::Method::GET, "/v1/goals", &p.read_key, None).await;
    assert_eq!(listed["goals"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_goal_definitions_get_400_naming_the_field() {
    let app = TestApp::start("goals_bad").await;
    let p = app.project.clone();
    let (status, _) = post(&app, "/v1/goals", &p.admin_key, &json!({"name": "A", "event": "a"})).await;
    assert_eq!(status, 201);
    let cases = [
        (json!({"event": "signup"}), "name"),
        (json!({"name": "x"}), "event"),
        (json!({"name": "x", "event": "a", "page_path": "/a"}), "page_path"),
        (json!({"name": "x", "page_path": "blog/*"}), "page_path"),
        (json!({"name": "x", "event": 3}), "event"),
        (json!({"name": "x", "event": "a", "steps": []}), "steps"),
        (
            json!({"name": "x", "event": "a", "filters": {"field": "event.bogus", "op": "eq", "value": 1}}),
            "filters.field",
        ),
        (
            json!({"name": "x", "event": "a", "filters": {"and": [{"field": "event.path", "op": "gt", "value": 1}]}}),
            "filters.and[0].value",
        ),
        (json!({"name": "A", "event": "b"}), "name"),
        (json!(["a"]), ""),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&app, "/v1/goals", &p.admin_key, &body).await;
        assert_eq!((status, field_of(&answer)), (400, field), "{body}: {answer}");
    }
    let (status, _) = post(&app, "/v1/goals", &p.read_key, &json!({"name": "R", "event": "r"})).await;
    assert_eq!(status, 403);

    let range = json!({"from": "2026-03-02", "to": "2026-03-03"});
    let cases = [
        (json!({"date_range": range, "goals": [{"event": "a", "page_path": "/"}]}), "goals[0].page_path"),
        (json!({"date_range": range, "goals": [{"event": "a"}, 999_999]}), "goals[1]"),
        (json!({"date_range": range, "goals": []}), "goals"),
        (json!({"date_range": range, "goals": ["a"]}), "goals[0]"),
        (
            json!({"date_range": range, "goals": [{"event": "a", "filters": {"field": "x", "op": "eq", "value": 1}}]}),
            "goals[0].filters.field",
        ),
        (json!({"date_range": range, "compare": "previous_period"}), "compare"),
        (json!({"date_range": range, "goal": 1}), "goal"),
        (json!({"date_range": range, "breakdown": {"field": "event.nope"}}), "breakdown.field"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&app, "/v1/query/goals", &p.read_key, &body).await;
        assert_eq!((status, field_of(&answer)), (400, field), "{body}: {answer}");
    }
}

#[tokio::test]
async fn goals_of_one_project_are_invisible_to_another() {
    let app = TestApp::start("goals_isolation").await;
    let a = app.project.clone();
    let b = nexus_origin::store::projects::create_project(&app.pool, "B", "UTC", &[]).await.unwrap();
    load(&app, &a.write_key).await;
    // B has more of everything, on the same days, with the same anonymous ids.
    load(&app, &b.write_key).await;
    send_browser(&app, &b.write_key, &[track("signup", "2026-03-02T15:00:00Z", "z", json!({"plan": "pro"}))]).await;
    let (_, gb) = post(&app, "/v1/goals", &b.admin_key, &json!({"name": "B goal", "event": "signup"})).await;
    let (_, listed) = call(&app, reqwest::Method::GET, "/v1/goals", &a.read_key, None).await;
    assert_eq!(listed["goals"], json!([]));
    let range = json!({"from": "2026-03-02", "to": "2026-03-03"});
    let (status, body) =
        post(&app, "/v1/query/goals", &a.read_key, &json!({"date_range": range, "goals": [gb["id"]]})).await;
    assert_eq!((status, field_of(&body)), (400, "goals[0]"));
    let (status, _) = call(&app, reqwest::Method::DELETE, &format!("/v1/goals/{}", gb["id"]), &a.admin_key, None).await;
    assert_eq!(status, 404);
    let (_, body) =
        post(&app, "/v1/query/goals", &a.read_key, &json!({"date_range": range, "goals": [{"event": "signup"}]})).await;
    assert_eq!(
        body["goals"][0]["series"][0]["totals"],
        json!({"conversions": 4, "converting_persons": 3, "unique_persons": 4, "conversion_rate": 0.75}),
        "{body}"
    );
    // With no saved goals, an empty answer.
    let (status, body) = post(&app, "/v1/query/goals", &a.read_key, &json!({"date_range": range})).await;
    assert_eq!((status, body["goals"].clone()), (200, json!([])));
}
