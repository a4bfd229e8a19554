//! Identity through the HTTP ingest path: identify merges the anonymous history, set/set_once,
//! and two identified persons are never merged by an identify.

use serde_json::{json, Value};

use crate::support::{batch, TestApp};

fn ev(kind: &str, anon: Option<&str>, user: Option<&str>, extra: Value) -> Value {
    let mut e =
        json!({"id": uuid::Uuid::now_v7(), "type": kind, "name": "step", "timestamp": chrono::Utc::now().to_rfc3339()});
    if let Some(a) = anon {
        e["anonymous_id"] = json!(a);
    }
    if let Some(u) = user {
        e["user_id"] = json!(u);
    }
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

async fn person(app: &TestApp, id: &str) -> (uuid::Uuid, Value, bool) {
    nexus_origin::store::persons::person_of(&app.pool, app.project.project_id, id).await.unwrap().unwrap()
}

async fn events_of_person(app: &TestApp, person: uuid::Uuid) -> i64 {
    let client = app.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM events e JOIN person_distinct_ids d
               ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id
             WHERE e.project_id = $1 AND d.person_id = $2",
            &[&app.project.project_id, &person],
        )
        .await
        .unwrap()
        .get(0)
}

async fn send(app: &TestApp, events: &[Value]) {
    let (status, body) = app.post_batch(batch(events), "application/json").await;
    assert_eq!((status, body["rejected"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
}

#[tokio::test]
async fn identify_merges_anonymous_history_with_set_and_set_once() {
    let app = TestApp::start("identity_merge").await;
    send(&app, &[ev("track", Some("anon-a"), None, json!({})), ev("page", Some("anon-a"), None, json!({}))]).await;
    send(&app, &[ev("track", Some("anon-a"), None, json!({}))]).await;
    let (anon_person, _, identified) = person(&app, "anon-a").await;
    assert!(!identified);
    send(
        &app,
        &[ev(
            "identify",
            Some("anon-a"),
            Some("user-1"),
            json!({"set": {"plan": "free"}, "set_once": {"first_plan": "free"}}),
        )],
    )
    .await;
    let (p, props, identified) = person(&app, "user-1").await;
    assert_eq!(p, anon_person, "the anonymous person became the user's");
    assert!(identified);
    assert_eq!(events_of_person(&app, p).await, 4, "3 anonymous events + the identify");
    send(
        &app,
        &[ev(
            "identify",
            Some("anon-a"),
            Some("user-1"),
            json!({"set": {"plan": "pro"}, "set_once": {"first_plan": "pro", "ref": "ad"}}),
        )],
    )
    .await;
    let (_, props2, _) = person(&app, "user-1").await;
    assert_eq!(props, json!({"plan": "free", "first_plan": "free"}));
    assert_eq!(props2, json!({"plan": "pro", "first_plan": "free", "ref": "ad"}));

    // A second device: its anonymous history joins the same person when the user logs in there.
    send(&app, &[ev("track", Some("anon-phone"), None, json!({})), ev("track", Some("anon-phone"), None, json!({}))])
        .await;
    let (phone_person, _, _) = person(&app, "anon-phone").await;
    assert_ne!(phone_person, p);
    send(&app, &[ev("identify", Some("anon-phone"), Some("user-1"), json!({}))]).await;
    assert_eq!(person(&app, "anon-phone").await.0, p, "merged into the user's person");
    assert_eq!(events_of_person(&app, p).await, 4 + 1 + 2 + 1);
    let client = app.pool.get().await.unwrap();
    let gone: i64 =
        client.query_one("SELECT count(*) FROM persons WHERE person_id = $1", &[&phone_person]).await.unwrap().get(0);
    assert_eq!(gone, 0, "the merged person is deleted");
}

#[tokio::test]
async fn two_identified_persons_are_not_merged_by_an_identify() {
    let app = TestApp::start("identity_no_merge").await;
    // Alice logs in on a shared computer, logs out (same anonymous id kept), Bob logs in.
    send(&app, &[ev("identify", Some("shared-pc"), Some("alice"), json!({"set": {"name": "Alice"}}))]).await;
    send(&app, &[ev("identify", Some("shared-pc"), Some("bob"), json!({"set": {"name": "Bob"}}))]).await;
    let (alice, alice_props, _) = person(&app, "alice").await;
    let (bob, bob_props, bob_identified) = person(&app, "bob").await;
    assert_ne!(alice, bob);
    assert!(bob_identified);
    assert_eq!((alice_props["name"].clone(), bob_props["name"].clone()), (json!("Alice"), json!("Bob")));
    assert_eq!(person(&app, "shared-pc").await.0, alice, "the device id stays with the first user");
    // Even with both ids already known as identified persons, an identify does not fuse them.
    send(&app, &[ev("identify", Some("alice"), Some("bob"), json!({}))]).await;
    assert_ne!(person(&app, "alice").await.0, person(&app, "bob").await.0);
}

#[tokio::test]
async fn a_deleted_person_stays_deleted_when_a_retried_batch_arrives() {
    let app = TestApp::start("gdpr_delete").await;
    let history = vec![
        ev("track", Some("anon-del"), None, json!({})),
        ev("identify", Some("anon-del"), Some("user-del"), json!({"set": {"email": "x@example.com"}})),
        ev("track", Some("anon-del"), Some("user-del"), json!({})),
    ];
    send(&app, &history).await;
    send(&app, &[ev("track", Some("someone-else"), None, json!({}))]).await;
    let (p, _, _) = person(&app, "user-del").await;
    assert_eq!(events_of_person(&app, p).await, 3);

    let url = app.url("/v1/persons/anon-del");
    let res = app.http.delete(&url).bearer_auth(&app.project.read_key).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 403, "deletion needs the admin key");
    let res = app.http.delete(&url).bearer_auth(&app.project.admin_key).send().await.unwrap();
    let (status, body) = crate::support::read(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], 3);
    let mut ids: Vec<String> = serde_json::from_value(body["distinct_ids"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["anon-del", "user-del"], "every id of the person, found from one");

    // The SDK retries the old batch (a lost answer), and a late event arrives.
    let (status, answer) = app.post_batch(batch(&history), "application/json").await;
    assert_eq!((status, answer["accepted"].as_i64()), (200, Some(3)), "acknowledged so it is not retried forever");
    send(&app, &[ev("track", None, Some("user-del"), json!({}))]).await;
    assert!(nexus_origin::store::persons::person_of(&app.pool, app.project.project_id, "user-del")
        .await
        .unwrap()
        .is_none());
    let client = app.pool.get().await.unwrap();
    let left: i64 = client
        .query_one("SELECT count(*) FROM events WHERE distinct_id IN ('anon-del', 'user-del')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the person stays deleted");
    assert_eq!(app.stored().await, 1, "other people's events are untouched");
    let warned: i64 = client
        .query_one("SELECT coalesce(sum(count), 0)::int8 FROM ingestion_warnings WHERE reason = 'person_deleted'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(warned, 4);
}
