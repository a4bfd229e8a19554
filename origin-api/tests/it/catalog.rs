//! The event catalog through the real HTTP stack on PostgreSQL: names with volume and first/last
//! seen, property keys with their JSON types, top values, the cap on high-cardinality keys,
//! duplicates not counted twice, and tenant isolation.

use serde_json::{json, Value};

use crate::support::{get, send_browser, TestApp};

fn ev(name: &str, ts: &str, props: Value) -> Value {
    json!({"id": uuid::Uuid::now_v7(), "type": "track", "name": name, "timestamp": ts, "anonymous_id": "a1",
           "properties": props})
}

/// (name, volume, first_seen, last_seen) of each listed event.
fn names(v: &Value) -> Vec<(String, i64, String, String)> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["volume"].as_i64().unwrap(),
                e["first_seen"].as_str().unwrap().to_owned(),
                e["last_seen"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn catalog_lists_names_keys_types_and_values_per_project() {
    let app = TestApp::start("catalog_lists").await;
    let (w, r) = (app.project.write_key.clone(), app.project.read_key.clone());
    let dup = ev("signup", "2026-03-02T10:00:00Z", json!({"plan": "pro", "n": 1}));
    send_browser(&app, &w, &[dup.clone(), ev("signup", "2026-03-01T09:00:00Z", json!({"plan": "free", "n": "x"}))])
        .await;
    send_browser(
        &app,
        &w,
        &[
            dup.clone(),
            ev("signup", "2026-03-03T08:00:00Z", json!({"plan": "pro", "tags": ["a"], "meta": {"k": 1}})),
            ev("view", "2026-03-02T12:00:00Z", json!({"plan": "team", "ok": true, "none": null})),
        ],
    )
    .await;
    // Another project's events are never shown to this one.
    let b = nexus_origin::store::projects::create_project(&app.pool, "B", "UTC", &[]).await.unwrap();
    send_browser(
        &app,
        &b.write_key,
        &[ev("secret_event", "2026-03-02T10:00:00Z", json!({"plan": "hidden", "b_only": 1}))],
    )
    .await;

    let (status, body) = get(&app, "/v1/catalog/events", &r).await;
    assert_eq!(status, 200, "{body}");
    // The re-delivered event is counted once.
    assert_eq!(
        names(&body),
        vec![
            ("signup".into(), 3, "2026-03-01T09:00:00Z".into(), "2026-03-03T08:00:00Z".into()),
            ("view".into(), 1, "2026-03-02T12:00:00Z".into(), "2026-03-02T12:00:00Z".into()),
        ]
    );
    let (_, body) = get(&app, "/v1/catalog/events?limit=1", &r).await;
    assert_eq!(names(&body).len(), 1);

    let (status, body) = get(&app, "/v1/catalog/events/signup/properties", &r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["properties"],
        json!([
            {"key": "meta", "types": ["object"]},
            {"key": "n", "types": ["string", "number"]},
            {"key": "plan", "types": ["string"]},
            {"key": "tags", "types": ["array"]},
        ])
    );
    let (_, body) = get(&app, "/v1/catalog/events/view/properties", &r).await;
    let types: Vec<Value> = body["properties"].as_array().unwrap().iter().map(|p| p["types"].clone()).collect();
    assert_eq!(types, vec![json!(["null"]), json!(["bool"]), json!(["string"])], "{body}");
    let (_, body) = get(&app, "/v1/catalog/events/signup/properties?limit=2", &r).await;
    assert_eq!(body["properties"].as_array().map(Vec::len), Some(2));

    let (status, body) = get(&app, "/v1/catalog/properties/plan/values", &r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"key": "plan", "capped": false, "values": [
            {"value": "pro", "count": 2}, {"value": "free", "count": 1}, {"value": "team", "count": 1}]})
    );
    let (_, body) = get(&app, "/v1/catalog/properties/n/values?limit=1", &r).await;
    assert_eq!(body["values"], json!([{"value": "1", "count": 1}]));
    let (_, body) = get(&app, "/v1/catalog/properties/ok/values", &r).await;
    assert_eq!(body["values"], json!([{"value": "true", "count": 1}]));
    // Objects and arrays are typed but their values are not counted.
    let (status, body) = get(&app, "/v1/catalog/properties/tags/values", &r).await;
    assert_eq!((status, body["values"].clone()), (200, json!([])));

    // Unknown to this project (known to B): 404, never B's data.
    for path in [
        "/v1/catalog/events/secret_event/properties",
        "/v1/catalog/properties/b_only/values",
        "/v1/catalog/events/x/properties",
    ] {
        let (status, body) = get(&app, path, &r).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }
    let (_, body) = get(&app, "/v1/catalog/events", &b.read_key).await;
    assert_eq!(names(&body).into_iter().map(|n| n.0).collect::<Vec<_>>(), vec!["secret_event".to_owned()]);
    let (_, body) = get(&app, "/v1/catalog/properties/plan/values", &b.read_key).await;
    assert_eq!(body["values"], json!([{"value": "hidden", "count": 1}]));

    let (status, body) = get(&app, "/v1/catalog/events?limit=0", &r).await;
    assert_eq!((status, body["error"]["details"]["field"].as_str()), (400, Some("limit")), "{body}");
    let (status, _) = get(&app, "/v1/catalog/events", &w).await;
    assert_eq!(status, 403);
    let res = app.http.get(app.url("/v1/catalog/events")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[tokio::test]
async fn high_cardinality_keys_are_capped_and_stop_counting() {
    let app = TestApp::start("catalog_capped").await;
    let (w, r) = (app.project.write_key.clone(), app.project.read_key.clone());
    let cap = nexus_origin::store::catalog::MAX_VALUES_PER_KEY as usize;
    let events: Vec<Value> = (0..cap + 50)
        .map(|i| ev("order", "2026-03-02T10:00:00Z", json!({"order_id": format!("o-{i:04}"), "plan": "pro"})))
        .collect();
    send_browser(&app, &w, &events).await;
    send_browser(&app, &w, &[ev("order", "2026-03-02T11:00:00Z", json!({"order_id": "late", "plan": "free"}))]).await;

    let (status, body) = get(&app, "/v1/catalog/properties/order_id/values?limit=1000", &r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capped"], json!(true), "{body}");
    let values = body["values"].as_array().unwrap();
    assert!(values.len() <= cap, "{} values kept", values.len());
    assert!(values.iter().all(|v| v["value"] != json!("late")), "a value after the cap was counted");
    // A low-cardinality key of the same events keeps counting.
    let (_, body) = get(&app, "/v1/catalog/properties/plan/values", &r).await;
    assert_eq!(
        body,
        json!({"key": "plan", "capped": false, "values": [
            {"value": "pro", "count": cap + 50}, {"value": "free", "count": 1}]})
    );
    let (_, body) = get(&app, "/v1/catalog/events", &r).await;
    assert_eq!(body["events"][0]["volume"], json!(cap + 51));
}
