//! Step "write" as a group commit: the events of requests that arrive while a transaction is
//! running are written together by the next one.
//!
//! Every transaction costs PostgreSQL a fixed price (statements, a WAL flush at commit, one
//! upsert per session touched), so writing each 100-event request on its own spent as much on
//! that price as on the rows. Requests hand their events to a small set of writer tasks over a
//! bounded channel; a writer takes every request waiting (up to `max_group_events` events) and
//! writes them in one transaction, then answers each request. An event is still acknowledged
//! only after the transaction that stored it committed.

use std::collections::{BTreeMap, BTreeSet};

use ahash::AHashSet as HashSet;
use std::sync::Arc;

use chrono::Utc;
use deadpool_postgres::Pool;
use protocol::forward::EnrichedEvent;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::DropReason;
use crate::store::{self, warnings::DroppedEvent, StoreError};

/// `[ingest]` settings of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Transactions writing at once. Default 4: a transaction spends much of its time waiting
    /// for its commit's WAL flush, when others can use the CPU (measured on 2 cores: 1 writer
    /// 41k events/s, 2 writers 36-40k, 4 writers 52-58k, 8 writers 52k).
    pub writers: usize,
    /// Largest number of events one transaction takes. Default 2,000.
    pub max_group_events: usize,
    /// Requests that may wait for a writer. Default 64.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { writers: 4, max_group_events: 2_000, queue: 64 }
    }
}

/// One request's share of a group.
struct Job {
    project_id: i64,
    events: Vec<EnrichedEvent>,
    drops: Vec<DroppedEvent>,
    done: oneshot::Sender<Result<usize, StoreError>>,
}

/// The handle requests write through. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    pool: Pool,
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer tasks on the current runtime. They stop when every handle is dropped.
    pub fn start(pool: Pool, config: WriterConfig) -> Writer {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(run(pool.clone(), rx.clone(), config.max_group_events.max(1)));
        }
        Writer { pool, jobs }
    }

    /// The pool (for the reads the other steps make).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes one request's events and records its drops; answers once they are committed.
    /// Returns the number of events accepted (new or already stored).
    pub async fn write(
        &self,
        project_id: i64,
        events: Vec<EnrichedEvent>,
        drops: Vec<DroppedEvent>,
    ) -> Result<usize, StoreError> {
        let (done, answer) = oneshot::channel();
        self.jobs.send(Job { project_id, events, drops, done }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn run(pool: Pool, jobs: Arc<Mutex<mpsc::Receiver<Job>>>, max_events: usize) {
    loop {
        let group = {
            let mut rx = jobs.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut size = first.events.len();
            let mut group = vec![first];
            while size < max_events {
                match rx.try_recv() {
                    Ok(job) => {
                        size += job.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        write_group(&pool, group).await;
    }
}

/// Writes a group and answers each of its requests.
async fn write_group(pool: &Pool, mut group: Vec<Job>) {
    let started = std::time::Instant::now();
    metrics::histogram!("nexus_origin_ingest_group_requests").record(group.len() as f64);
    match store_group(pool, &mut group).await {
        Ok(()) => {
            metrics::histogram!("nexus_origin_ingest_batch_seconds").record(started.elapsed().as_secs_f64());
            for job in group {
                let accepted = job.events.len();
                for d in &job.drops {
                    metrics::counter!("nexus_origin_events_dropped_total", "reason" => d.reason.as_str()).increment(1);
                }
                // The events are committed: a failure to record the warnings is logged, not
                // returned, or the sender would retry a batch that is already stored.
                if let Err(e) = store::warnings::record(pool, job.project_id, Utc::now(), &job.drops).await {
                    tracing::warn!(error = %e, "recording ingestion warnings failed");
                }
                let _ = job.done.send(Ok(accepted));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for job in group {
                let _ = job.done.send(Err(StoreError::Group(e.clone())));
            }
        }
    }
}

/// The ids an event is known by, for tombstones.
fn ids_of(e: &EnrichedEvent) -> impl Iterator<Item = &str> {
    [e.event.anonymous_id.as_deref(), e.event.user_id.as_deref(), e.visitor_hash.as_deref()].into_iter().flatten()
}

/// Steps "drop deleted persons", "dedupe" and "write" for a group; adds each job's drops.
async fn store_group(pool: &Pool, group: &mut [Job]) -> Result<(), StoreError> {
    // Step "drop deleted persons": acknowledged (a retry would change nothing), never stored.
    // A group's events share a handful of ids per project: each is looked up once.
    let mut ids: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for job in group.iter() {
        ids.entry(job.project_id).or_default().extend(job.events.iter().flat_map(ids_of));
    }
    let mut deleted: HashSet<(i64, String)> = HashSet::default();
    for (project_id, ids) in ids {
        let ids: Vec<&str> = ids.into_iter().collect();
        deleted.extend(store::persons::tombstoned(pool, project_id, &ids).await?.into_iter().map(|d| (project_id, d)));
    }
    let mut kept: Vec<Vec<EnrichedEvent>> = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let project_id = job.project_id;
        let is_gone = |e: &EnrichedEvent| ids_of(e).any(|id| deleted.contains(&(project_id, id.to_owned())));
        let (gone, keep): (Vec<EnrichedEvent>, Vec<EnrichedEvent>) = if deleted.is_empty() {
            (Vec::new(), std::mem::take(&mut job.events))
        } else {
            std::mem::take(&mut job.events).into_iter().partition(is_gone)
        };
        job.drops.extend(gone.iter().map(|e| dropped(DropReason::PersonDeleted, e)));
        // The answer counts every event of the request, the deleted persons' included.
        job.events = gone;
        kept.push(keep);
    }
    let batches: Vec<(i64, &[EnrichedEvent])> =
        group.iter().zip(&kept).map(|(job, events)| (job.project_id, events.as_slice())).collect();
    let inserted: HashSet<(i64, Uuid)> = store::events::insert(pool, &batches).await?;
    metrics::counter!("nexus_origin_events_stored_total").increment(inserted.len() as u64);
    // Duplicates: accepted, not stored again. Within a group, the first copy of an id is new
    // and any later copy (of the same or another request) a duplicate.
    let mut first = inserted;
    for (job, events) in group.iter_mut().zip(kept) {
        for e in &events {
            if !first.remove(&(job.project_id, e.event.id)) {
                job.drops.push(dropped(DropReason::Duplicate, e));
            }
        }
        job.events.extend(events);
    }
    Ok(())
}

fn dropped(reason: DropReason, e: &EnrichedEvent) -> DroppedEvent {
    DroppedEvent { reason, field: None, event_id: Some(e.event.id.to_string()), name: Some(e.event.name.clone()) }
}
