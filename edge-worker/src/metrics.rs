//! Counts of accepted and dropped events: what one request (or one queue delivery) did with its
//! events, as Workers Analytics Engine data points and as one structured log line.
//!
//! A data point is one (request, outcome) pair, so `SUM(_sample_interval)` counts requests and
//! `SUM(_sample_interval * double1)` counts events; the schema is in the README. Reasons are the
//! protocol's stable codes and the limits' reasons: closed sets, low cardinality.

use std::collections::BTreeMap;

use protocol::envelope::Rejected;
use serde::Serialize;

/// The optional Analytics Engine binding (`[[analytics_engine_datasets]]`); without it the
/// counts are in the log line only.
pub const ANALYTICS_BINDING: &str = "EVENTS_AE";

/// Outcome blob of the events that were taken (forwarded, queued, or delivered by the consumer).
pub const ACCEPTED: &str = "accepted";
/// Outcome blob of events refused one by one (by the edge's validator or the origin's).
pub const REJECTED: &str = "rejected";
/// Outcome blob of a request refused whole (or a queue message dead-lettered).
pub const REFUSED: &str = "refused";

/// Where the events came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/batch`.
    Batch,
    /// `POST /v1/track`.
    Track,
    /// `GET /v1/p.gif`.
    Pixel,
    /// The delivery queue's consumer.
    Queue,
}

impl Source {
    /// The route blob.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Batch => "batch",
            Source::Track => "track",
            Source::Pixel => "pixel",
            Source::Queue => "queue",
        }
    }
}

/// A request refused whole: why, and how many valid events it held (0 when it was refused
/// before its body was read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// An envelope code (`invalid_key`, `payload_too_large`, `upstream_error`, ...), a limit's
    /// reason (`rate_limited_ip`, `quota_exceeded`, ...) or a dead letter's reason.
    pub reason: String,
    /// Valid events held back.
    pub events: u64,
}

/// What happened to the events of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The route.
    pub source: Source,
    /// The project, once the key was resolved.
    pub project_id: Option<i64>,
    /// Valid events known so far: what a refusal holds back.
    pub valid: u64,
    /// Events taken.
    pub accepted: u64,
    /// Events refused one by one, by code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// The whole request refused.
    pub refused: Option<Refusal>,
}

/// One Analytics Engine data point: `index1` = project id (empty when unknown), `blob1` = route,
/// `blob2` = [`ACCEPTED`] / [`REJECTED`] / [`REFUSED`], `blob3` = the code or reason (empty for
/// accepted), `double1` = events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataPoint {
    /// `[project id]`: the sampling key, so one project's flood does not thin out the others.
    pub indexes: [String; 1],
    /// `[route, outcome, reason]`.
    pub blobs: [String; 3],
    /// `[events]`.
    pub doubles: [f64; 1],
}

impl Tally {
    /// An empty tally of a request that came by `source`.
    pub fn new(source: Source) -> Tally {
        Tally { source, project_id: None, valid: 0, accepted: 0, rejected: BTreeMap::new(), refused: None }
    }

    /// Counts per-event rejections by code.
    pub fn reject(&mut self, rejected: &[Rejected]) {
        for r in rejected {
            *self.rejected.entry(r.code.as_str()).or_insert(0) += 1;
        }
    }

    /// Marks the request refused whole, holding back the valid events known so far.
    pub fn refuse(&mut self, reason: &str) {
        self.refuse_events(reason, self.valid);
    }

    /// Marks the request refused whole, holding back `events`.
    pub fn refuse_events(&mut self, reason: &str, events: u64) {
        self.accepted = 0;
        self.refused = Some(Refusal { reason: reason.to_owned(), events });
    }

    /// One word for the request's fate: `accepted`, the first rejection code, or the refusal's
    /// reason (the pixel's `x-nexus-outcome` header: an `<img>` cannot read a body).
    pub fn outcome(&self) -> &str {
        match (&self.refused, self.accepted, self.rejected.keys().next()) {
            (Some(r), _, _) => &r.reason,
            (None, 0, Some(code)) => code,
            _ => ACCEPTED,
        }
    }

    /// The data points of this request, accepted first.
    pub fn data_points(&self) -> Vec<DataPoint> {
        let index = self.project_id.map(|p| p.to_string()).unwrap_or_default();
        let point = |outcome: &str, reason: &str, events: u64| DataPoint {
            indexes: [index.clone()],
            blobs: [self.source.as_str().to_owned(), outcome.to_owned(), reason.to_owned()],
            doubles: [events as f64],
        };
        let mut points = Vec::with_capacity(1 + self.rejected.len());
        if self.accepted > 0 {
            points.push(point(ACCEPTED, "", self.accepted));
        }
        points.extend(self.rejected.iter().map(|(code, n)| point(REJECTED, code, *n)));
        if let Some(r) = &self.refused {
            points.push(point(REFUSED, &r.reason, r.events));
        }
        points
    }

    /// The request's structured log line: `{"event": "ingest", "route", "status", "project_id",
    /// "accepted", "rejected": {code: n}, "refused": {"reason", "events"} | null}`.
    pub fn log_line(&self, status: u16) -> serde_json::Value {
        serde_json::json!({
            "event": "ingest",
            "route": self.source.as_str(),
            "status": status,
            "project_id": self.project_id,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "refused": self.refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::RejectCode;

    fn rejected(codes: &[RejectCode]) -> Vec<Rejected> {
        codes.iter().enumerate().map(|(index, code)| Rejected { index, code: *code, field: None }).collect()
    }

    /// `(blob2, blob3, double1)` of each point, and the outcome word.
    fn check(tally: &Tally, points: &[(&str, &str, f64)], outcome: &str) {
        let got: Vec<_> =
            tally.data_points().into_iter().map(|p| (p.blobs[1].clone(), p.blobs[2].clone(), p.doubles[0])).collect();
        let want: Vec<_> = points.iter().map(|(o, r, n)| (o.to_string(), r.to_string(), *n)).collect();
        assert_eq!(got, want, "{tally:?}");
        assert_eq!(tally.outcome(), outcome, "{tally:?}");
    }

    #[test]
    fn outcomes() {
        let mut t = Tally::new(Source::Batch);
        check(&t, &[], ACCEPTED);
        t.accepted = 3;
        t.reject(&rejected(&[RejectCode::InvalidId, RejectCode::InvalidType, RejectCode::InvalidId]));
        check(&t, &[(ACCEPTED, "", 3.0), (REJECTED, "invalid_id", 2.0), (REJECTED, "invalid_type", 1.0)], ACCEPTED);
        t.accepted = 0;
        check(&t, &[(REJECTED, "invalid_id", 2.0), (REJECTED, "invalid_type", 1.0)], "invalid_id");
        let mut t = Tally::new(Source::Pixel);
        t.valid = 1;
        t.refuse("invalid_key");
        check(&t, &[(REFUSED, "invalid_key", 1.0)], "invalid_key");
        let mut t = Tally::new(Source::Track);
        t.accepted = 5;
        t.refuse_events("quota_exceeded", 5);
        check(&t, &[(REFUSED, "quota_exceeded", 5.0)], "quota_exceeded");
    }

    #[test]
    fn points_carry_route_and_project() {
        let mut t = Tally::new(Source::Track);
        t.project_id = Some(42);
        t.accepted = 1;
        let p = &t.data_points()[0];
        assert_eq!(p.indexes, ["42".to_owned()]);
        assert_eq!(p.blobs[0], "track");
        assert_eq!(
            serde_json::to_value(p).ok(),
            Some(serde_json::json!({"indexes": ["42"], "blobs": ["track", "accepted", ""], "doubles": [1.0]}))
        );
        assert_eq!(Tally::new(Source::Queue).data_points(), vec![]);
        let mut none = Tally::new(Source::Batch);
        none.refuse("missing_key");
        assert_eq!(none.data_points()[0].indexes, [String::new()]);
    }

    #[test]
    fn log_line() {
        let mut t = Tally::new(Source::Pixel);
        t.project_id = Some(7);
        t.accepted = 1;
        assert_eq!(
            t.log_line(200),
            serde_json::json!({"event": "ingest", "route": "pixel", "status": 200, "project_id": 7, "accepted": 1, "rejected": {}, "refused": null})
        );
        t.refuse_events("rate_limited_ip", 0);
        assert_eq!(t.log_line(429)["refused"], serde_json::json!({"reason": "rate_limited_ip", "events": 0}));
        assert_eq!(t.log_line(429)["accepted"], 0);
    }
}
