//! The two Durable Objects (wasm32 only): `SaltStore`, the daily visitor salts, and
//! `ProjectQuota`, a project's exact events-per-minute count. Both are SQLite-backed classes
//! (wrangler.toml `new_sqlite_classes`); their decisions are the plain functions of
//! [`crate::salt`] and [`crate::limits`].
//!
//! The worker talks to them with `fetch` on made-up URLs (`https://salts/salt?day=...`): they
//! are reachable only through their bindings, never from the internet.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::js_sys::{Date, Function, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue, State};

use crate::delivery::{self, DeadLetter};
use crate::limits::{self, QuotaAnswer, Window};
use crate::routes::query_param;
use crate::salt::{self, Day, SALT_BYTES};

/// No query parameters (a typed `None` for `SqlStorage::exec`).
const NO_ARGS: Option<Vec<SqlStorageValue>> = None;

/// The salt object's answer to `GET /salt?day=N`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SaltAnswer {
    /// The day the salt belongs to.
    pub day: i64,
    /// Hex of [`SALT_BYTES`] random bytes.
    pub salt: String,
}

/// One stored salt.
#[derive(Deserialize)]
struct SaltRow {
    day: i64,
    salt: String,
}

/// The daily visitor salts of the whole deployment: one instance (named `visitor-salts`), so
/// every isolate everywhere hashes with the same salt on the same day.
#[durable_object(alarm)]
pub struct SaltStore {
    state: State,
}

impl DurableObject for SaltStore {
    fn new(state: State, _env: Env) -> Self {
        SaltStore { state }
    }

    /// `GET /salt?day=N`: the salt of day N (made on first use), after deleting expired salts.
    /// `GET /days`: the days whose salts are stored (tests check the deletion with it; no salt
    /// is shown).
    async fn fetch(&self, req: Request) -> Result<Response> {
        self.schema()?;
        let url = req.inner().url();
        match req.path().as_str() {
            "/salt" => {
                let Some(day) = query_param(&url, "day").and_then(|d| d.parse::<i64>().ok()).map(Day) else {
                    return Response::error("day must be a whole number", 400);
                };
                self.delete_expired(day)?;
                let salt = self.salt_of(day)?;
                self.arm_alarm(day).await?;
                Response::from_json(&SaltAnswer { day: day.0, salt })
            }
            "/days" => {
                let rows: Vec<SaltRow> =
                    self.state.storage().sql().exec("SELECT day, salt FROM salts ORDER BY day", NO_ARGS)?.to_array()?;
                Response::from_json(&rows.iter().map(|r| r.day).collect::<Vec<_>>())
            }
            _ => Response::error("not found", 404),
        }
    }

    /// At the first midnight after a salt was handed out: deletes what expired by the clock, so
    /// old salts go even when no request comes, and re-arms while salts remain.
    async fn alarm(&self) -> Result<Response> {
        self.schema()?;
        let today = Day::from_millis(Date::now());
        self.delete_expired(today)?;
        let left: Vec<SaltRow> = self.state.storage().sql().exec("SELECT day, salt FROM salts", NO_ARGS)?.to_array()?;
        if !left.is_empty() {
            self.arm_alarm(today).await?;
        }
        Response::ok("ok")
    }
}

impl SaltStore {
    fn schema(&self) -> Result<()> {
        self.state
            .storage()
            .sql()
            .exec("CREATE TABLE IF NOT EXISTS salts (day INTEGER PRIMARY KEY, salt TEXT NOT NULL)", NO_ARGS)?;
        Ok(())
    }

    /// Deletes every salt [`salt::expired`] on `today`.
    fn delete_expired(&self, today: Day) -> Result<()> {
        let sql = self.state.storage().sql();
        let rows: Vec<SaltRow> = sql.exec("SELECT day, salt FROM salts", NO_ARGS)?.to_array()?;
        for row in rows.iter().filter(|r| salt::expired(Day(r.day), today)) {
            sql.exec("DELETE FROM salts WHERE day = ?", vec![SqlStorageValue::try_from_i64(row.day)?])?;
        }
        Ok(())
    }

    /// The salt of `day`, made from `crypto.getRandomValues` the first time it is asked for.
    fn salt_of(&self, day: Day) -> Result<String> {
        let sql = self.state.storage().sql();
        let key = SqlStorageValue::try_from_i64(day.0)?;
        let rows: Vec<SaltRow> =
            sql.exec("SELECT day, salt FROM salts WHERE day = ?", vec![key.clone()])?.to_array()?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(row.salt);
        }
        // No await between the read above and this write: the object runs one event at a time,
        // so two first requests of a day cannot make two salts.
        let fresh = salt::to_hex(&random_bytes(SALT_BYTES)?);
        sql.exec("INSERT INTO salts (day, salt) VALUES (?, ?)", vec![key, SqlStorageValue::from(fresh.as_str())])?;
        Ok(fresh)
    }

    /// Arms the alarm for the end of `today` unless one is set (the alarm handler re-arms).
    async fn arm_alarm(&self, today: Day) -> Result<()> {
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none() {
            let at = today.next_midnight_ms().saturating_add(1000);
            let wait_ms = (at as f64 - Date::now()).max(1000.0) as i64;
            storage.set_alarm(wait_ms).await?;
        }
        Ok(())
    }
}

/// `n` bytes from the runtime's CSPRNG (`crypto.getRandomValues`).
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let crypto = Reflect::get(&worker::js_sys::global(), &JsValue::from_str("crypto"))?;
    let get_random_values: Function = Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))?
        .dyn_into()
        .map_err(|_| worker::Error::RustError("crypto.getRandomValues is missing".into()))?;
    let buf = Uint8Array::new_with_length(u32::try_from(n).map_err(|e| worker::Error::RustError(e.to_string()))?);
    get_random_values.call1(&crypto, &buf)?;
    Ok(buf.to_vec())
}

/// One project's event quota: `POST /take?events=N&limit=L` counts N events in the current
/// minute if they fit under L (see [`limits::take`]). One instance per project
/// (`project:<id>`), so the count is exact however many isolates send.
#[durable_object(fetch)]
pub struct ProjectQuota {
    state: State,
    /// The current window, loaded from storage on first use.
    window: RefCell<Option<Window>>,
}

/// Storage key of the window.
const WINDOW_KEY: &str = "window";

impl DurableObject for ProjectQuota {
    fn new(state: State, _env: Env) -> Self {
        ProjectQuota { state, window: RefCell::new(None) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.inner().url();
        let number = |name: &str| query_param(&url, name).and_then(|v| v.parse::<u64>().ok());
        let (Some(events), Some(limit)) = (number("events"), number("limit")) else {
            return Response::error("events and limit must be whole numbers", 400);
        };
        let cached = *self.window.borrow();
        let mut window = match cached {
            Some(w) => w,
            // Kept in storage as well as in memory: an evicted object must not forget the
            // minute's count (that would let a project send twice its quota).
            None => self.state.storage().get::<Window>(WINDOW_KEY).await.ok().flatten().unwrap_or_default(),
        };
        let answer: QuotaAnswer = limits::take(&mut window, Date::now() as i64, events, limit);
        if answer.allowed {
            if let Err(e) = self.state.storage().put(WINDOW_KEY, window).await {
                console_error!("quota window could not be stored: {e}");
            }
        }
        *self.window.borrow_mut() = Some(window);
        Response::from_json(&answer)
    }
}

/// A stored dead letter as the admin list shows it (without the batch itself).
#[derive(Debug, Serialize, Deserialize)]
pub struct LetterSummary {
    /// The dead-letter queue message id it came from.
    pub id: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The origin's status, when it answered.
    pub status: Option<i64>,
    /// The origin's answer or what was wrong.
    pub detail: String,
    /// When it was dead-lettered (ms since the epoch).
    pub at_ms: i64,
    /// Events in the batch (`0`: unreadable).
    pub events: usize,
}

/// A stored dead letter with its batch, for a re-drive.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredLetter {
    /// Row id.
    pub id: String,
    /// The original delivery message (`None`: there was no text to keep).
    pub batch: Option<String>,
}

#[derive(Deserialize)]
struct LetterRow {
    id: String,
    reason: String,
    status: Option<i64>,
    detail: String,
    at_ms: i64,
    batch: Option<String>,
}

/// The dead letters, kept until a re-drive takes them: one object for the deployment
/// (`dead-letters`), fed by the consumer of the dead-letter queue. A queue keeps messages only
/// for its retention period; this object keeps them until someone re-drives or deletes them.
///
/// `POST /put?id=` (a [`DeadLetter`] body; a repeated id is ignored, so a redelivered queue
/// message is kept once), `GET /list?limit=`, `GET /take?limit=` (oldest first, not removed),
/// `POST /delete` (a JSON array of ids).
#[durable_object(fetch)]
pub struct DeadLetterStore {
    state: State,
}

impl DurableObject for DeadLetterStore {
    fn new(state: State, _env: Env) -> Self {
        DeadLetterStore { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS letters (id TEXT PRIMARY KEY, reason TEXT NOT NULL, status INTEGER, \
             detail TEXT NOT NULL, at_ms INTEGER NOT NULL, batch TEXT)",
            NO_ARGS,
        )?;
        let url = req.inner().url();
        let limit = query_param(&url, "limit").and_then(|v| v.parse::<i64>().ok()).unwrap_or(100).clamp(1, 1000);
        let select = |limit: i64| -> Result<Vec<LetterRow>> {
            sql.exec(
                "SELECT id, reason, status, detail, at_ms, batch FROM letters ORDER BY at_ms, id LIMIT ?",
                vec![SqlStorageValue::try_from_i64(limit)?],
            )?
            .to_array()
        };
        match req.path().as_str() {
            "/put" => {
                let Some(id) = query_param(&url, "id").filter(|i| !i.is_empty()) else {
                    return Response::error("id is required", 400);
                };
                let letter: DeadLetter = match serde_json::from_str(&req.text().await?) {
                    Ok(l) => l,
                    Err(e) => return Response::error(format!("not a dead letter: {e}"), 400),
                };
                let status = letter.status.map_or(SqlStorageValue::Null, |s| SqlStorageValue::from(i64::from(s)));
                let batch = letter.batch.map_or(SqlStorageValue::Null, SqlStorageValue::from);
                sql.exec(
                    "INSERT OR IGNORE INTO letters (id, reason, status, detail, at_ms, batch) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![
                        SqlStorageValue::from(id),
                        SqlStorageValue::from(letter.reason),
                        status,
                        SqlStorageValue::from(letter.detail),
                        SqlStorageValue::try_from_i64(i64::try_from(letter.at_ms).unwrap_or(i64::MAX))?,
                        batch,
                    ],
                )?;
                Response::ok("stored")
            }
            "/list" => {
                let rows = select(limit)?;
                let letters: Vec<LetterSummary> = rows
                    .into_iter()
                    .map(|r| LetterSummary {
                        events: r.batch.as_deref().and_then(delivery::readable_batch).unwrap_or(0),
                        id: r.id,
                        reason: r.reason,
                        status: r.status,
                        detail: r.detail,
                        at_ms: r.at_ms,
                    })
                    .collect();
                Response::from_json(&letters)
            }
            "/take" => {
                let rows = select(limit)?;
                Response::from_json(
                    &rows.into_iter().map(|r| StoredLetter { id: r.id, batch: r.batch }).collect::<Vec<_>>(),
                )
            }
            "/delete" => {
                let ids: Vec<String> = match serde_json::from_str(&req.text().await?) {
                    Ok(ids) => ids,
                    Err(e) => return Response::error(format!("not a list of ids: {e}"), 400),
                };
                for id in ids {
                    sql.exec("DELETE FROM letters WHERE id = ?", vec![SqlStorageValue::from(id)])?;
                }
                Response::ok("deleted")
            }
            _ => Response::error("not found", 404),
        }
    }
}
