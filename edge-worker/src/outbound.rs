//! The signed bodies the edge posts to the origin, cut into chunks the origin accepts.
//!
//! A full public batch plus enrichment fits [`MAX_FORWARD_BYTES`] in practice; when it does not
//! (a thousand events with long user agents), the events go in several requests instead of one
//! the origin would refuse. Each event is serialised once; the chunk bodies are assembled from
//! those pieces and are exactly what serialising a [`ForwardBatch`] would give.
//!
//! [`ForwardBatch`]: protocol::forward::ForwardBatch

use protocol::forward::EnrichedEvent;
use protocol::limits::MAX_FORWARD_BYTES;
use serde::Serialize;
use serde_json::value::RawValue;

/// Why forward bodies could not be built (a bug, never the sender's fault).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// An event did not serialise.
    #[error("could not serialise a forwarded event: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// One forward request: events `start..start + len` of the forwarded list, and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the first event in the forwarded list.
    pub start: usize,
    /// Events in this chunk.
    pub len: usize,
    /// The `ForwardBatch` JSON.
    pub body: String,
}

/// Same field names and order as `protocol::forward::ForwardBatch`, over pre-serialised events.
#[derive(Serialize)]
struct ForwardBatchRef<'a> {
    write_key: &'a str,
    events: &'a [Box<RawValue>],
}

/// Builds the forward bodies for `events` with the origin's body limit.
pub fn forward_chunks(write_key: &str, events: &[EnrichedEvent]) -> Result<Vec<Chunk>, OutboundError> {
    forward_chunks_with_limit(write_key, events, MAX_FORWARD_BYTES)
}

/// [`forward_chunks`] with an explicit body limit, in bytes. An event that alone exceeds the
/// limit still goes, alone (the origin judges it).
pub fn forward_chunks_with_limit(
    write_key: &str,
    events: &[EnrichedEvent],
    max_bytes: usize,
) -> Result<Vec<Chunk>, OutboundError> {
    let pieces = events
        .iter()
        .map(|e| serde_json::to_string(e).and_then(RawValue::from_string))
        .collect::<Result<Vec<_>, _>>()?;
    let overhead = serde_json::to_string(&ForwardBatchRef { write_key, events: &[] })?.len();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < pieces.len() {
        let mut end = start;
        let mut size = overhead;
        while end < pieces.len() {
            let add = pieces[end].get().len() + usize::from(end > start);
            if end > start && size + add > max_bytes {
                break;
            }
            size += add;
            end += 1;
        }
        let body = serde_json::to_string(&ForwardBatchRef { write_key, events: &pieces[start..end] })?;
        chunks.push(Chunk { start, len: end - start, body });
        start = end;
    }
    Ok(chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::forward::{enrich, ForwardBatch, RequestContext};

    fn events(n: usize) -> Vec<EnrichedEvent> {
        (0..n)
            .map(|i| {
                let ev = serde_json::from_value(serde_json::json!({
                    "id": format!("0193a1b2-c3d4-7e5f-8a9b-{i:012x}"), "type": "track", "name": format!("e{i}"),
                    "anonymous_id": "a", "timestamp": "2026-12-01T10:00:00Z", "properties": {"q": "'; drop table events; --"}
                }))
                .unwrap();
                enrich(ev, &RequestContext { received_at: "2026-12-01T10:00:01Z".parse().unwrap(), ..Default::default() })
            })
            .collect()
    }

    #[test]
    fn one_chunk_equals_the_typed_forward_batch() {
        let evs = events(3);
        let chunks = forward_chunks("wk_1", &evs).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].start, chunks[0].len), (0, 3));
        let typed = ForwardBatch { write_key: "wk_1".into(), events: evs.clone() };
        assert_eq!(chunks[0].body, serde_json::to_string(&typed).unwrap());
        assert_eq!(serde_json::from_str::<ForwardBatch>(&chunks[0].body).unwrap(), typed);
        assert!(forward_chunks("wk_1", &[]).unwrap().is_empty());
    }

    #[test]
    fn chunks_respect_the_limit_and_cover_every_event_once() {
        let evs = events(10);
        let one = serde_json::to_string(&evs[0]).unwrap().len();
        for limit in [one * 3 + 40, one * 4 + 100, 10, usize::MAX] {
            let chunks = forward_chunks_with_limit("k", &evs, limit).unwrap();
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.start, next);
                assert!(c.len >= 1);
                assert!(c.body.len() <= limit || c.len == 1, "limit {limit}: {}", c.body.len());
                let batch: ForwardBatch = serde_json::from_str(&c.body).unwrap();
                assert_eq!(batch.events, evs[c.start..c.start + c.len]);
                next += c.len;
            }
            assert_eq!(next, evs.len(), "limit {limit}");
        }
        assert_eq!(forward_chunks_with_limit("k", &evs, 10).unwrap().len(), 10);
        assert_eq!(forward_chunks_with_limit("k", &evs, usize::MAX).unwrap().len(), 1);
    }
}
