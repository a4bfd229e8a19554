//! The workers-rs glue (wasm32 only): the fetch entry point, origin calls and HTTP answers.
//!
//! Decisions live in the plain modules; this file reads the request, calls them in the order the
//! protocol fixes, and turns their verdicts into responses. It never panics on input: every
//! header, `cf` field and binding is read through `Option`-returning code, and every failure
//! becomes a JSON error body (`{"error": {"code": ..., "message": ...}}`).

use std::cell::RefCell;

use futures_util::StreamExt;
use protocol::envelope::{self, BatchResponse, EnvelopeError, ErrorBody, ParsedBatch};
use protocol::forward::{enrich, EnrichedEvent, KeyLookupRequest, INGEST_PATH, KEY_LOOKUP_PATH};
use protocol::limits::MAX_BATCH_BYTES;
use protocol::signing::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use protocol::{EnvelopeCode, COMPRESSION_PARAM, KEY_HEADER, KEY_PARAM};
use serde::Serialize;
use worker::js_sys::{Date, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{
    console_error, console_log, console_warn, web_sys, AnalyticsEngineDataPointBuilder, Env, Fetch, Headers,
    MessageBatch, MessageExt, QueueContentType, QueueRetryOptionsBuilder, RawMessage, RawMessageBuilder, Request,
    Response,
};

use crate::config::{
    self, Config, DEAD_LETTERS_BINDING, DEAD_LETTER_STORE_BINDING, DELIVERY_BINDING, PATH_PREFIX, QUOTAS_BINDING,
    SALTS_BINDING,
};
use crate::context::{self, RequestFacts};
use crate::cors::{self, Verdict};
use crate::delivery::{self, DeadLetter, DeliveryMode, Outcome, DEFAULT_RETRY_DELAY_SECS, QUEUE_MESSAGE_BYTES};
use crate::durable::{self, LetterSummary, SaltAnswer, StoredLetter};
use crate::geo::{self, CfValue};
use crate::keys::{self, KeyCache, KeyState, KnownKey};
use crate::limits::{self, Limit, QuotaAnswer, BINDING_PERIOD_SECS, IP_LIMITER, KEY_LIMITER};
use crate::merge::{self, ChunkAnswer};
use crate::metrics::{Source, Tally, ANALYTICS_BINDING};
use crate::outbound;
use crate::routes::{self, Route};
use crate::salt::{self, Day, SaltCache, TEST_DAY_HEADER};
use crate::single;

/// How long one origin request may take before the sender gets a retryable `upstream_error`.
const ORIGIN_TIMEOUT_MS: u32 = 10_000;

thread_local! {
    /// Write-key answers, per isolate (see [`keys::KeyCache`] for the expiry rules).
    static KEYS: RefCell<KeyCache> = RefCell::new(KeyCache::default());
    /// Today's visitor salt, per isolate (see [`salt::SaltCache`]).
    static SALT: RefCell<SaltCache> = RefCell::new(SaltCache::default());
}

/// Name of the one `SaltStore` instance: one salt per day for the whole deployment.
const SALT_OBJECT: &str = "visitor-salts";
/// Name of the one `DeadLetterStore` instance.
const DEAD_LETTER_OBJECT: &str = "dead-letters";

/// Why a request ended without a normal answer.
enum Failure {
    /// The sender's request is refused with this code (4xx, or a retryable 502).
    Envelope(EnvelopeError),
    /// Our bug or misconfiguration: logged in full, answered as a bare 500 `internal`.
    Internal(String),
    /// A rate limit or the quota refused the request: 429 `rate_limited` with `Retry-After`
    /// (seconds), counted in the logs with the events it held back.
    Limited { limit: Limit, retry_after_secs: u32, events: usize },
}

impl From<EnvelopeError> for Failure {
    fn from(e: EnvelopeError) -> Self {
        Failure::Envelope(e)
    }
}

impl From<worker::Error> for Failure {
    fn from(e: worker::Error) -> Self {
        Failure::Internal(e.to_string())
    }
}

/// Answers one request; never `Err` for anything a sender can do (see [`crate::fetch`]).
pub async fn fetch(req: Request, env: Env) -> worker::Result<Response> {
    match handle(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(failure) => failure_response(failure),
    }
}

async fn handle(req: Request, env: &Env) -> Result<Response, Failure> {
    // The serialised URL, not worker's `Url`: parsing it would link a URL parser (and IDNA tables).
    let url = req.inner().url();
    let prefix = config::path_prefix(env_string(env, PATH_PREFIX).as_deref());
    // The raw method: worker::Method maps unknown methods to GET.
    let method = req.inner().method();
    let route = routes::route(&method, &req.path(), &prefix);
    match route {
        Route::Health => Ok(json_response(200, &serde_json::json!({ "status": "ok" }))?),
        Route::NotFound => Err(EnvelopeError::new(EnvelopeCode::NotFound, "no such route").into()),
        Route::MethodNotAllowed { allow } => {
            let e = EnvelopeError::new(EnvelopeCode::MethodNotAllowed, format!("use {allow} on this route"));
            let mut resp = json_response(e.code.status(), &e.body())?;
            resp.headers_mut().set("allow", allow)?;
            Ok(resp)
        }
        Route::Batch => post_events(req, env, &url, Source::Batch).await,
        Route::Track => post_events(req, env, &url, Source::Track).await,
        Route::Pixel => pixel(req, env, &url).await,
        Route::Preflight => preflight(&req, &load_config(env)?, &url).await,
        Route::DeadLetters | Route::Redrive => admin(&req, env, &load_config(env)?, &url, route).await,
    }
}

fn load_config(env: &Env) -> Result<Config, Failure> {
    Config::from_lookup(|name| env_string(env, name)).map_err(|e| Failure::Internal(format!("configuration: {e}")))
}

/// What the ingest routes learnt about the key, for the CORS headers of whatever they answer.
#[derive(Default)]
struct KeySlot {
    /// A lookup was made (successful or not): do not repeat it for the CORS decision.
    attempted: bool,
    /// The key's project, when the key exists (revoked or not).
    project: Option<KnownKey>,
}

/// `POST /v1/batch` and `POST /v1/track`: the answer of [`ingest`], with CORS headers for an
/// allowed origin.
async fn post_events(mut req: Request, env: &Env, url: &str, source: Source) -> Result<Response, Failure> {
    let mut tally = Tally::new(source);
    // A misconfigured worker refuses every request: those are drops too, and counted.
    let cfg = match load_config(env) {
        Ok(cfg) => cfg,
        Err(failure) => return Ok(answer(env, Err(failure), &mut tally)?),
    };
    let cfg = &cfg;
    let origin = header(&req, "origin");
    let key = write_key(url, &req);
    let mut slot = KeySlot::default();
    let outcome = ingest(&mut req, env, cfg, url, key.as_deref(), &mut slot, &mut tally).await;
    let ip_limited = matches!(outcome, Err(Failure::Limited { limit: Limit::Ip, .. }));
    let mut resp = answer(env, outcome, &mut tally)?;
    let (Some(origin), Some(key)) = (origin, key) else {
        return Ok(resp);
    };
    if !slot.attempted {
        // Refused before the key was looked at (415, ...): an allowed origin must still be able
        // to read why, or the SDK would see a network error and retry a hopeless request. A
        // sender over its IP limit gets only what the cache knows: its flood of made-up keys
        // must not turn into origin lookups.
        let state = if ip_limited { Ok(cached_key(&key)) } else { resolve_key(cfg, &key).await };
        if let Ok(KeyState::Known(p)) = state {
            slot.project = Some(p);
        }
    }
    if let Some(Verdict::Allowed(o)) = slot.project.as_ref().map(|p| cors::verdict(Some(&origin), &p.project)) {
        set_headers(&mut resp, &cors::response_headers(&o))?;
    }
    Ok(resp)
}

/// `GET /v1/p.gif?k=<key>&u=<url>&r=<referrer>&t=<title>`: the page view through the same
/// pipeline, and always the 1x1 GIF (`no-store`, so every view is a request), whatever became of
/// the event: an `<img>` shows nothing either way. The outcome is counted like any other, and
/// named in `x-nexus-outcome` for whoever debugs a pixel by hand.
async fn pixel(mut req: Request, env: &Env, url: &str) -> Result<Response, Failure> {
    let key = single::pixel_key(url);
    let mut slot = KeySlot::default();
    let mut tally = Tally::new(Source::Pixel);
    // The pixel always carries one event: a refusal holds it back.
    tally.valid = 1;
    let outcome = match load_config(env) {
        Ok(cfg) => ingest(&mut req, env, &cfg, url, key.as_deref(), &mut slot, &mut tally).await,
        Err(failure) => Err(failure),
    };
    answer(env, outcome, &mut tally)?;
    let mut resp = Response::from_bytes(single::PIXEL_GIF.to_vec())?;
    set_headers(
        &mut resp,
        &[
            ("content-type", "image/gif".to_owned()),
            ("cache-control", "no-store".to_owned()),
            ("x-nexus-outcome", tally.outcome().to_owned()),
        ],
    )?;
    Ok(resp)
}

/// Turns the pipeline's outcome into the answer, completes the tally with a refusal, and
/// records it (log line, Analytics Engine).
fn answer(env: &Env, outcome: Result<Response, Failure>, tally: &mut Tally) -> worker::Result<Response> {
    let resp = match outcome {
        Ok(resp) => resp,
        Err(failure) => {
            match &failure {
                Failure::Envelope(e) => tally.refuse(e.code.as_str()),
                Failure::Internal(_) => tally.refuse(EnvelopeCode::Internal.as_str()),
                Failure::Limited { limit, events, .. } => tally.refuse_events(limit.reason(), *events as u64),
            }
            failure_response(failure)?
        }
    };
    record(env, tally, resp.status_code());
    Ok(resp)
}

/// One structured log line per ingest request, and its data points in the `EVENTS_AE` dataset
/// when that binding exists (a failed write is logged, never the request's problem).
fn record(env: &Env, tally: &Tally, status: u16) {
    console_log!("{}", tally.log_line(status));
    let Ok(dataset) = env.analytics_engine(ANALYTICS_BINDING) else {
        return;
    };
    for point in tally.data_points() {
        let [index] = &point.indexes;
        let [route, outcome, reason] = &point.blobs;
        let data = AnalyticsEngineDataPointBuilder::new()
            .indexes([index.as_str()])
            .blobs([route.as_str(), outcome.as_str(), reason.as_str()])
            .doubles(point.doubles)
            .build();
        if let Err(e) = dataset.write_data_point(&data) {
            console_error!("analytics engine write failed: {e}");
        }
    }
}

/// The shared pipeline of the three ingest routes, checks in protocol order (see the crate
/// docs): admission (limits, key, origin), the route's events as a [`ParsedBatch`], then
/// [`process`].
async fn ingest(
    req: &mut Request,
    env: &Env,
    cfg: &Config,
    url: &str,
    key: Option<&str>,
    slot: &mut KeySlot,
    tally: &mut Tally,
) -> Result<Response, Failure> {
    let received_ms = Date::now();
    let cf_ip = header(req, "cf-connecting-ip");
    let forwarded_for = header(req, "x-forwarded-for");
    let ip = context::client_ip(cf_ip.as_deref(), forwarded_for.as_deref()).to_owned();
    drop((cf_ip, forwarded_for));
    // First, before any other work: a flood from one address costs one binding call each.
    // The binding is Cloudflare's own counter at the edge: the IP goes nowhere else.
    rate_limit(env, Limit::Ip, &ip).await?;
    let key = key.ok_or_else(|| {
        let how = match tally.source {
            Source::Pixel => "pass ?k=".to_owned(),
            _ => format!("pass ?{KEY_PARAM}= or the {KEY_HEADER} header"),
        };
        EnvelopeError::new(EnvelopeCode::MissingKey, format!("no write key: {how}"))
    })?;
    // The pixel has no body; the others are read with the batch's rules.
    let gzip = match tally.source {
        Source::Pixel => None,
        _ => {
            envelope::check_content_type(header(req, "content-type").as_deref())?;
            let param = query(url, COMPRESSION_PARAM);
            Some(envelope::is_gzip(header(req, "content-encoding").as_deref(), param.as_deref())?)
        }
    };

    slot.attempted = true;
    let state = resolve_key(cfg, key).await?;
    if let KeyState::Known(p) = &state {
        slot.project = Some(p.clone());
        tally.project_id = Some(p.project.project_id);
    }
    let known = keys::check_key(&state)?;
    if cors::verdict(header(req, "origin").as_deref(), &known.project) == Verdict::Refused {
        return Err(origin_not_allowed().into());
    }
    // Only known keys get a bucket: random keys cannot fill the limiter's memory.
    rate_limit(env, Limit::Key, key).await?;

    let parsed = match gzip {
        Some(gzip) => {
            let body = read_decoded(req, gzip).await?;
            match tally.source {
                Source::Track => single::parse_track(&body)?,
                _ => envelope::parse_batch(&body)?,
            }
        }
        None => {
            let random: [u8; 10] = durable::random_bytes(10)?
                .try_into()
                .map_err(|_| Failure::Internal("crypto.getRandomValues gave the wrong length".into()))?;
            let id = single::uuid_v7(received_ms.max(0.0) as u64, &random);
            let referer = header(req, "referer");
            single::pixel_event(url, referer.as_deref(), id, context::time_from_millis(received_ms))
        }
    };
    process(req, env, cfg, key, known, ip, received_ms, parsed, tally).await
}

/// The body under the batch cap, gunzipped under the same cap.
async fn read_decoded(req: &mut Request, gzip: bool) -> Result<Vec<u8>, Failure> {
    let declared = header(req, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BATCH_BYTES as u64) {
        return Err(too_large().into());
    }
    let raw = read_body(req, MAX_BATCH_BYTES).await?;
    Ok(envelope::decode_body(&raw, gzip, MAX_BATCH_BYTES)?)
}

/// The batch handler proper, whichever route the events came by: quota, enrichment, delivery,
/// and the per-event answer. `ip` is consumed here: it feeds the visitor hash and is dropped.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
async fn process(
    req: &Request,
    env: &Env,
    cfg: &Config,
    key: &str,
    known: &KnownKey,
    ip: String,
    received_ms: f64,
    parsed: ParsedBatch,
    tally: &mut Tally,
) -> Result<Response, Failure> {
    let project = &known.project;
    let valid = parsed.events.iter().filter(|e| e.is_ok()).count();
    tally.valid = valid as u64;
    let edge_rejected = parsed.rejected();
    tally.reject(&edge_rejected);
    log_rejections(&edge_rejected);
    if let Some(quota) = limits::effective_quota(known.events_per_minute, cfg.events_per_minute) {
        take_quota(env, project.project_id, valid, quota).await?;
    }

    let cf = cf_object(req);
    let lookup = |path: &str| cf_value(cf.as_ref(), path);
    let user_agent = header(req, "user-agent");
    let day = salt::request_day(Date::now(), cfg.test_mode, header(req, TEST_DAY_HEADER).as_deref());
    let salt = visitor_salt(env, cfg, day).await;
    let ctx = context::request_context(RequestFacts {
        received_at: context::time_from_millis(received_ms),
        sent_at: parsed.sent_at,
        geo: geo::geo_from_cf(lookup),
        user_agent: user_agent.as_deref(),
        ip: &ip,
        project_id: project.project_id,
        salt: salt.as_deref().map(str::as_bytes),
        bot_score: geo::bot_score(lookup),
    });
    // The IP ends here; nothing below can reach it.
    drop(ip);

    let forwarded = merge::forwarded_indexes(&parsed.events);
    let events: Vec<EnrichedEvent> =
        parsed.events.into_iter().filter_map(Result::ok).map(|e| enrich(e, &ctx)).collect();
    if events.is_empty() {
        return Ok(json_response(200, &BatchResponse { accepted: 0, rejected: edge_rejected })?);
    }
    if cfg.delivery == DeliveryMode::Queue {
        let resp = enqueue(env, key, &events, edge_rejected).await?;
        tally.accepted = events.len() as u64;
        return Ok(resp);
    }
    let chunks = outbound::forward_chunks(key, &events).map_err(|e| Failure::Internal(e.to_string()))?;
    drop(events);

    let mut answers = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let reply = post_signed(cfg, INGEST_PATH, chunk.body).await?;
        if !(200..300).contains(&reply.status) {
            // A chunk sent before this one may be stored already; the sender retries the whole
            // batch and the origin's dedup on event ids absorbs the repeat.
            let (resp, code) = pass_through(reply)?;
            tally.refuse(code.as_str());
            return Ok(resp);
        }
        let response: BatchResponse = serde_json::from_slice(&reply.body).map_err(|_| {
            console_error!("origin answered {} with an unreadable batch response", reply.status);
            upstream("the origin answered an unreadable response")
        })?;
        answers.push(ChunkAnswer { start: chunk.start, len: chunk.len, response });
    }
    let origin_rejected: Vec<_> = answers.iter().flat_map(|a| a.response.rejected.iter().cloned()).collect();
    let merged = merge::merge(edge_rejected, &forwarded, &answers).map_err(|e| {
        console_error!("origin answer does not match the forwarded events: {e}");
        upstream("the origin answered an inconsistent response")
    })?;
    tally.reject(&origin_rejected);
    tally.accepted = merged.accepted as u64;
    Ok(json_response(200, &merged)?)
}

/// `queue` mode: the enriched events onto the `DELIVERY` queue, one `ForwardBatch` text per
/// message under the queue's message limit; the sender gets `200` with the accepted count and
/// the edge's own rejections (the origin's later ones cannot reach it). A failed send answers
/// a retryable `503` (messages sent before it are delivered; the origin dedups the repeat).
async fn enqueue(
    env: &Env,
    key: &str,
    events: &[EnrichedEvent],
    rejected: Vec<envelope::Rejected>,
) -> Result<Response, Failure> {
    let queue = env.queue(DELIVERY_BINDING).map_err(|_| {
        Failure::Internal(format!("DELIVERY_MODE is queue but the {DELIVERY_BINDING} binding is missing"))
    })?;
    let chunks = outbound::forward_chunks_with_limit(key, events, QUEUE_MESSAGE_BYTES)
        .map_err(|e| Failure::Internal(e.to_string()))?;
    for chunk in chunks {
        let message =
            RawMessageBuilder::new(JsValue::from_str(&chunk.body)).build_with_content_type(QueueContentType::Text);
        if let Err(e) = queue.send_raw(message).await {
            console_error!("delivery queue send failed: {e}");
            return Err(EnvelopeError::new(EnvelopeCode::Unavailable, "the delivery queue is unavailable").into());
        }
    }
    Ok(json_response(200, &BatchResponse { accepted: events.len(), rejected })?)
}

/// The queue consumer: the delivery queue's messages go to the origin; the dead-letter queue's
/// go into the `DeadLetterStore` (see [`crate::delivery`]). Never `Err`: every message is acked
/// or retried on its own.
pub async fn consume(batch: MessageBatch<JsValue>, env: Env) -> worker::Result<()> {
    // A message neither acked nor retried counts as acked when the handler returns: every path
    // below must decide for each message.
    let Ok(cfg) = Config::from_lookup(|name| env_string(&env, name)).map_err(|e| {
        console_error!("queue consumer misconfigured ({e}): messages retried");
    }) else {
        batch.retry_all_with_options(
            &QueueRetryOptionsBuilder::new().with_delay_seconds(DEFAULT_RETRY_DELAY_SECS).build(),
        );
        return Ok(());
    };
    let dead_letter_queue = batch.queue() == cfg.dead_letter_queue;
    for message in batch.raw_iter() {
        if dead_letter_queue {
            keep_dead_letter(&env, &cfg, &message).await;
        } else {
            deliver(&env, &cfg, &message).await;
        }
    }
    Ok(())
}

fn retry_after(message: &RawMessage, delay_secs: u32) {
    message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay_secs).build());
}

/// Forwards one delivery message, signed now; acks, retries or dead-letters it.
async fn deliver(env: &Env, cfg: &Config, message: &RawMessage) {
    let text = message.body().as_string();
    let readable = text.as_deref().and_then(delivery::readable_batch);
    let (Some(body), Some(events)) = (text.clone(), readable) else {
        let letter = DeadLetter {
            reason: delivery::REASON_UNREADABLE.to_owned(),
            status: None,
            detail: "not a ForwardBatch JSON text".to_owned(),
            at_ms: Date::now().max(0.0) as u64,
            batch: text.or_else(|| worker::js_sys::JSON::stringify(&message.body()).ok().and_then(|s| s.as_string())),
        };
        dead_letter(env, cfg, message, letter).await;
        return;
    };
    let (status, retry_header, answer) = match post_signed(cfg, INGEST_PATH, body.clone()).await {
        Ok(reply) => (Some(reply.status), reply.retry_after, String::from_utf8_lossy(&reply.body).into_owned()),
        Err(_) => (None, None, String::new()),
    };
    match delivery::classify(status, retry_header.as_deref(), cfg.retry_delay_secs) {
        Outcome::Delivered => {
            let mut tally = Tally::new(Source::Queue);
            tally.accepted = events as u64;
            if let Ok(response) = serde_json::from_str::<BatchResponse>(&answer) {
                log_rejections(&response.rejected);
                tally.accepted = response.accepted as u64;
                tally.reject(&response.rejected);
            }
            console_log!("{}", serde_json::json!({ "event": "delivered", "events": events }));
            record(env, &tally, status.unwrap_or(200));
            message.ack();
        }
        Outcome::Retry { delay_secs } => {
            console_warn!(
                "{}",
                serde_json::json!({ "event": "delivery_retry", "status": status, "events": events, "delay_secs": delay_secs })
            );
            retry_after(message, delay_secs);
        }
        Outcome::DeadLetter { reason } => {
            let letter = DeadLetter {
                reason: reason.to_owned(),
                status,
                detail: geo::truncate(&answer, delivery::DETAIL_BYTES).to_owned(),
                at_ms: Date::now().max(0.0) as u64,
                batch: Some(body),
            };
            dead_letter(env, cfg, message, letter).await;
        }
    }
}

/// Sends `letter` to the dead-letter queue and acks the message; if that send fails, the
/// message is retried instead (never dropped).
async fn dead_letter(env: &Env, cfg: &Config, message: &RawMessage, letter: DeadLetter) {
    let events = letter.batch.as_deref().and_then(delivery::readable_batch).unwrap_or(0);
    let mut tally = Tally::new(Source::Queue);
    tally.refuse_events(&format!("dead_letter_{}", letter.reason), events as u64);
    record(env, &tally, letter.status.unwrap_or(0));
    console_error!(
        "{}",
        serde_json::json!({ "event": "drop", "reason": "dead_letter", "cause": letter.reason, "status": letter.status, "events": events })
    );
    let sent = async {
        let queue = env.queue(DEAD_LETTERS_BINDING)?;
        let text = serde_json::to_string(&letter).map_err(|e| worker::Error::RustError(e.to_string()))?;
        queue
            .send_raw(RawMessageBuilder::new(JsValue::from_str(&text)).build_with_content_type(QueueContentType::Text))
            .await
    }
    .await;
    match sent {
        Ok(()) => message.ack(),
        Err(e) => {
            console_error!("dead-letter queue send failed, message retried: {e}");
            retry_after(message, cfg.retry_delay_secs);
        }
    }
}

/// A dead-letter queue message into the `DeadLetterStore`, keyed by its message id.
async fn keep_dead_letter(env: &Env, cfg: &Config, message: &RawMessage) {
    let letter = delivery::dead_letter_of(message.body().as_string(), Date::now().max(0.0) as u64);
    let stored: worker::Result<()> = async {
        let body = serde_json::to_string(&letter).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let resp = dead_letter_store(env, &format!("put?id={}", message.id()), "POST", Some(body)).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("store answered {}", resp.status_code())));
        }
        Ok(())
    }
    .await;
    match stored {
        Ok(()) => {
            console_log!(
                "{}",
                serde_json::json!({ "event": "dead_letter_stored", "reason": letter.reason, "status": letter.status })
            );
            message.ack();
        }
        Err(e) => {
            console_error!("dead letter could not be stored, retried: {e}");
            retry_after(message, cfg.retry_delay_secs);
        }
    }
}

/// One call to the `DeadLetterStore` object (`path` with its query).
async fn dead_letter_store(env: &Env, path: &str, method: &str, body: Option<String>) -> worker::Result<Response> {
    let stub = env.durable_object(DEAD_LETTER_STORE_BINDING)?.id_from_name(DEAD_LETTER_OBJECT)?.get_stub()?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    if let Some(b) = body {
        init.set_body(&JsValue::from_str(&b));
    }
    let request = web_sys::Request::new_with_str_and_init(&format!("https://dead-letters/{path}"), &init)?;
    stub.fetch_with_request(Request::from(request)).await
}

/// The admin routes: `ADMIN_SECRET` unset hides them (`404`); a wrong bearer is `401`.
async fn admin(req: &Request, env: &Env, cfg: &Config, url: &str, route: Route) -> Result<Response, Failure> {
    let Some(secret) = cfg.admin_secret.as_deref() else {
        return Err(EnvelopeError::new(EnvelopeCode::NotFound, "no such route").into());
    };
    if !delivery::admin_authorised(header(req, "authorization").as_deref(), secret) {
        return Err(EnvelopeError::new(
            EnvelopeCode::InvalidKey,
            "admin routes need Authorization: Bearer <ADMIN_SECRET>",
        )
        .into());
    }
    let limit = query(url, "limit").and_then(|v| v.parse::<u32>().ok()).unwrap_or(100).clamp(1, 1000);
    match route {
        Route::DeadLetters => {
            let mut resp = dead_letter_store(env, &format!("list?limit={limit}"), "GET", None).await?;
            let letters: Vec<LetterSummary> = resp.json().await?;
            Ok(json_response(200, &serde_json::json!({ "dead_letters": letters }))?)
        }
        _ => redrive(env, limit).await,
    }
}

/// `POST /admin/v1/redrive?limit=`: the oldest dead letters back onto the delivery queue, then
/// out of the store (a crash in between re-drives them twice: the origin dedups by event id).
async fn redrive(env: &Env, limit: u32) -> Result<Response, Failure> {
    let mut resp = dead_letter_store(env, &format!("take?limit={limit}"), "GET", None).await?;
    let letters: Vec<StoredLetter> = resp.json().await?;
    let queue = env.queue(DELIVERY_BINDING)?;
    let mut moved = Vec::new();
    let mut failed = 0usize;
    for letter in letters {
        // A letter without a text (a message that was no string) goes back as `null`: it will be
        // dead-lettered again as unreadable, never silently dropped.
        let body = letter.batch.map_or(JsValue::NULL, |b| JsValue::from_str(&b));
        match queue.send_raw(RawMessageBuilder::new(body).build_with_content_type(QueueContentType::Json)).await {
            Ok(()) => moved.push(letter.id),
            Err(e) => {
                console_error!("re-drive send failed: {e}");
                failed += 1;
            }
        }
    }
    if !moved.is_empty() {
        let ids = serde_json::to_string(&moved).map_err(|e| Failure::Internal(e.to_string()))?;
        dead_letter_store(env, "delete", "POST", Some(ids)).await?;
    }
    console_log!("{}", serde_json::json!({ "event": "redrive", "moved": moved.len(), "failed": failed }));
    Ok(json_response(200, &serde_json::json!({ "redriven": moved.len(), "failed": failed }))?)
}

/// `OPTIONS /v1/batch?key=...`: 204 with CORS headers for an allowed origin, else 403.
async fn preflight(req: &Request, cfg: &Config, url: &str) -> Result<Response, Failure> {
    let key = query(url, KEY_PARAM).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
        EnvelopeError::new(EnvelopeCode::MissingKey, format!("a preflight needs the write key in ?{KEY_PARAM}="))
    })?;
    let state = resolve_key(cfg, key.trim()).await?;
    let known = keys::check_key(&state)?;
    match cors::verdict(header(req, "origin").as_deref(), &known.project) {
        Verdict::Allowed(origin) => {
            let mut resp = Response::empty()?.with_status(204);
            set_headers(&mut resp, &cors::preflight_headers(&origin))?;
            Ok(resp)
        }
        Verdict::NotCors | Verdict::Refused => Err(origin_not_allowed().into()),
    }
}

/// The key's state if the isolate cache has it (never asks the origin).
fn cached_key(key: &str) -> KeyState {
    let now_ms = Date::now().max(0.0) as u64;
    KEYS.with(|c| c.borrow().get(key, now_ms).cloned()).unwrap_or(KeyState::Unknown)
}

/// The key's state: from the isolate cache, else from the origin (then cached).
async fn resolve_key(cfg: &Config, key: &str) -> Result<KeyState, Failure> {
    if !keys::plausible_key(key) {
        return Ok(KeyState::Unknown);
    }
    let now_ms = Date::now().max(0.0) as u64;
    if let Some(state) = KEYS.with(|c| c.borrow().get(key, now_ms).cloned()) {
        return Ok(state);
    }
    let body = serde_json::to_string(&KeyLookupRequest { write_key: key.to_owned() })
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let reply = post_signed(cfg, KEY_LOOKUP_PATH, body).await?;
    match keys::interpret_lookup(reply.status, &reply.body) {
        Ok(state) => {
            KEYS.with(|c| c.borrow_mut().insert(key, state.clone(), now_ms));
            Ok(state)
        }
        Err(e) => {
            console_error!("{e}");
            Err(upstream("the origin could not resolve the write key").into())
        }
    }
}

/// The origin's answer, read in full.
struct OriginReply {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// POSTs `body` to an origin path, signed at the moment of sending.
async fn post_signed(cfg: &Config, path: &str, body: String) -> Result<OriginReply, Failure> {
    let timestamp = (Date::now() / 1000.0) as i64;
    let signature = sign(cfg.origin_secret.as_bytes(), timestamp, body.as_bytes());
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(TIMESTAMP_HEADER, &timestamp.to_string())?;
    headers.set(SIGNATURE_HEADER, &signature)?;
    // web_sys's RequestInit, not worker's: the latter links serialisers for every `cf` option.
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.0);
    init.set_body(&JsValue::from_str(&body));
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(ORIGIN_TIMEOUT_MS)));
    let request =
        web_sys::Request::new_with_str_and_init(&cfg.origin_endpoint(path), &init).map_err(worker::Error::from)?;
    let mut resp = Fetch::Request(Request::from(request)).send().await.map_err(|e| {
        console_error!("origin {path} unreachable: {e}");
        upstream("the origin is unreachable")
    })?;
    let status = resp.status_code();
    let retry_after = resp.headers().get("retry-after").ok().flatten();
    let body = resp.bytes().await.map_err(|e| {
        console_error!("origin {path} answer could not be read: {e}");
        upstream("the origin answer could not be read")
    })?;
    Ok(OriginReply { status, retry_after, body })
}

/// Hands an origin error to the sender: same status, JSON body and `Retry-After`, so 429/5xx
/// are retried and other 4xx are final. A refused edge signature is our problem, not the
/// sender's: it becomes a retryable 502 instead of a 401 that would make the SDK drop events.
/// Also returns the answer's code, for the counts.
fn pass_through(reply: OriginReply) -> Result<(Response, EnvelopeCode), Failure> {
    let error = serde_json::from_slice::<ErrorBody>(&reply.body).ok().map(|b| b.error.code);
    if matches!(error, Some(EnvelopeCode::InvalidSignature | EnvelopeCode::SignatureExpired)) {
        console_error!("origin refused the edge signature: check ORIGIN_SECRET and the clocks");
        return Err(upstream("the origin refused the edge").into());
    }
    if !(400..=599).contains(&reply.status) {
        console_error!("origin answered unexpected status {}", reply.status);
        return Err(upstream("the origin answered an unexpected status").into());
    }
    let by_status = match reply.status {
        429 => EnvelopeCode::RateLimited,
        503 => EnvelopeCode::Unavailable,
        413 => EnvelopeCode::PayloadTooLarge,
        _ => EnvelopeCode::UpstreamError,
    };
    let body = if serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body).is_ok() {
        reply.body
    } else {
        let e = EnvelopeError::new(by_status, format!("the origin answered status {}", reply.status));
        serde_json::to_vec(&e.body()).map_err(|e| Failure::Internal(e.to_string()))?
    };
    let mut resp = Response::from_bytes(body)?.with_status(reply.status);
    resp.headers_mut().set("content-type", "application/json")?;
    if let Some(retry_after) = reply.retry_after {
        resp.headers_mut().set("retry-after", &retry_after)?;
    }
    Ok((resp, error.unwrap_or(by_status)))
}

/// Reads the body, refusing more than `cap` bytes without reading further.
async fn read_body(req: &mut Request, cap: usize) -> Result<Vec<u8>, Failure> {
    // No body at all (a POST without one) reads as empty; parse_batch then refuses it.
    let Ok(mut stream) = req.stream() else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| EnvelopeError::new(EnvelopeCode::MalformedJson, "the request body could not be read"))?;
        if buf.len() + chunk.len() > cap {
            return Err(too_large().into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The write key from `?key=`, else from the `x-nexus-key` header.
fn write_key(url: &str, req: &Request) -> Option<String> {
    let clean = |k: String| Some(k.trim().to_owned()).filter(|k| !k.is_empty());
    query(url, KEY_PARAM).and_then(clean).or_else(|| header(req, KEY_HEADER).and_then(clean))
}

/// The request's `cf` object, when the runtime gave one (read raw: `worker::Cf` getters panic
/// on missing fields).
fn cf_object(req: &Request) -> Option<JsValue> {
    Reflect::get(req.inner(), &JsValue::from_str("cf")).ok().filter(JsValue::is_object)
}

/// A `cf` field by dotted path (`botManagement.score`): a string, a number, or `None`.
fn cf_value(cf: Option<&JsValue>, path: &str) -> Option<CfValue> {
    let mut value = cf?.clone();
    for part in path.split('.') {
        if !value.is_object() {
            return None;
        }
        value = Reflect::get(&value, &JsValue::from_str(part)).ok()?;
    }
    if let Some(s) = value.as_string() {
        Some(CfValue::Text(s))
    } else {
        value.as_f64().map(CfValue::Number)
    }
}

/// A var or secret as a string (both are JS strings on `env`).
fn env_string(env: &Env, name: &str) -> Option<String> {
    Reflect::get(env, &JsValue::from_str(name)).ok().and_then(|v| v.as_string())
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

fn query(url: &str, name: &str) -> Option<String> {
    routes::query_param(url, name)
}

fn set_headers(resp: &mut Response, headers: &[(&str, String)]) -> worker::Result<()> {
    for (name, value) in headers {
        resp.headers_mut().set(name, value)?;
    }
    Ok(())
}

fn json_response(status: u16, body: &impl Serialize) -> worker::Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

fn failure_response(failure: Failure) -> worker::Result<Response> {
    match failure {
        Failure::Envelope(e) => json_response(e.code.status(), &e.body()),
        Failure::Internal(detail) => {
            console_error!("internal error: {detail}");
            let e = EnvelopeError::new(EnvelopeCode::Internal, "internal error");
            json_response(e.code.status(), &e.body())
        }
        Failure::Limited { limit, retry_after_secs, events } => {
            log_drop(limit.reason(), events);
            let message = match limit {
                Limit::Quota => "the project's events-per-minute quota is used up",
                Limit::Ip | Limit::Key => "too many requests",
            };
            let e = EnvelopeError::new(EnvelopeCode::RateLimited, message);
            let mut resp = json_response(e.code.status(), &e.body())?;
            resp.headers_mut().set("retry-after", &retry_after_secs.to_string())?;
            Ok(resp)
        }
    }
}

/// One structured log line per dropped request or events: `{"event": "drop", "reason", "events"}`
/// (Workers Logs can count and chart these by reason).
fn log_drop(reason: &str, events: usize) {
    console_log!("{}", serde_json::json!({ "event": "drop", "reason": reason, "events": events }));
}

/// Counts the events the edge refused, one line per batch with the count of each code.
fn log_rejections(rejected: &[envelope::Rejected]) {
    if rejected.is_empty() {
        return;
    }
    let mut counts = serde_json::Map::new();
    for r in rejected {
        let n = counts.get(r.code.as_str()).and_then(serde_json::Value::as_u64).unwrap_or(0);
        counts.insert(r.code.as_str().to_owned(), (n + 1).into());
    }
    console_log!(
        "{}",
        serde_json::json!({ "event": "drop", "reason": "rejected", "events": rejected.len(), "codes": counts })
    );
}

/// Asks a rate-limit binding about `key`. A missing binding (local development without it) or
/// a failing one lets the request through: a limiter outage must not drop events.
async fn rate_limit(env: &Env, limit: Limit, key: &str) -> Result<(), Failure> {
    let binding = match limit {
        Limit::Ip => IP_LIMITER,
        Limit::Key => KEY_LIMITER,
        Limit::Quota => return Ok(()),
    };
    let Ok(limiter) = env.rate_limiter(binding) else {
        return Ok(());
    };
    match limiter.limit(key.to_owned()).await {
        Ok(outcome) if !outcome.success => {
            Err(Failure::Limited { limit, retry_after_secs: BINDING_PERIOD_SECS, events: 0 })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            console_error!("rate limiter {binding} failed: {e}");
            Ok(())
        }
    }
}

/// Counts `events` against the project's quota in its `ProjectQuota` object. Without the
/// binding, or when the object fails, the batch goes through (logged): the quota protects the
/// origin from one project's flood, it must not lose events when it is itself unwell.
async fn take_quota(env: &Env, project_id: i64, events: usize, quota: u64) -> Result<(), Failure> {
    if events == 0 {
        return Ok(());
    }
    let Ok(namespace) = env.durable_object(QUOTAS_BINDING) else {
        return Ok(());
    };
    let answer: worker::Result<QuotaAnswer> = async {
        let stub = namespace.id_from_name(&format!("project:{project_id}"))?.get_stub()?;
        let mut resp = stub.fetch_with_str(&format!("https://quota/take?events={events}&limit={quota}")).await?;
        let text = resp.text().await?;
        serde_json::from_str::<QuotaAnswer>(&text).map_err(|e| worker::Error::RustError(e.to_string()))
    }
    .await;
    match answer {
        Ok(a) if !a.allowed => {
            Err(Failure::Limited { limit: Limit::Quota, retry_after_secs: a.retry_after_secs, events })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            console_error!("quota object failed, batch let through: {e}");
            Ok(())
        }
    }
}

/// The visitor salt of `day`: from the isolate cache, else from the `SaltStore` object; without
/// that binding, the fixed `VISITOR_SALT` (local development). `None` (logged) forwards the
/// events without a visitor hash rather than refusing them.
async fn visitor_salt(env: &Env, cfg: &Config, day: Day) -> Option<String> {
    if let Some(s) = SALT.with(|c| c.borrow().get(day).map(str::to_owned)) {
        return Some(s);
    }
    let Ok(namespace) = env.durable_object(SALTS_BINDING) else {
        if cfg.visitor_salt.is_none() {
            console_warn!("neither the SALTS object nor VISITOR_SALT is set: events carry no visitor hash");
        }
        return cfg.visitor_salt.clone();
    };
    let answer: worker::Result<SaltAnswer> = async {
        let stub = namespace.id_from_name(SALT_OBJECT)?.get_stub()?;
        let mut resp = stub.fetch_with_str(&format!("https://salts/salt?day={}", day.0)).await?;
        let text = resp.text().await?;
        serde_json::from_str::<SaltAnswer>(&text).map_err(|e| worker::Error::RustError(e.to_string()))
    }
    .await;
    match answer {
        Ok(a) if a.day == day.0 && salt::valid_salt(&a.salt) => {
            SALT.with(|c| c.borrow_mut().set(day, a.salt.clone()));
            Some(a.salt)
        }
        Ok(_) => {
            console_error!("salt object answered an invalid salt, events go without a visitor hash");
            None
        }
        Err(e) => {
            console_error!("salt object failed, events go without a visitor hash: {e}");
            None
        }
    }
}

fn upstream(message: &str) -> EnvelopeError {
    EnvelopeError::new(EnvelopeCode::UpstreamError, message)
}

fn too_large() -> EnvelopeError {
    EnvelopeError::new(EnvelopeCode::PayloadTooLarge, format!("body is larger than {MAX_BATCH_BYTES} bytes"))
}

fn origin_not_allowed() -> EnvelopeError {
    EnvelopeError::new(EnvelopeCode::OriginNotAllowed, "this origin may not send events to the project")
}
