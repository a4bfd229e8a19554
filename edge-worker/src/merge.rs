//! Index bookkeeping: the origin numbers the events it was sent, the client numbers its batch.
//!
//! The edge forwards only the events it accepted (possibly in several chunks), so an origin
//! rejection at index `i` of a chunk starting at `start` is the client's event
//! `forwarded[start + i]`. The client gets one list: edge and origin rejections, by index.

use protocol::envelope::{BatchResponse, Rejected};

/// Why an origin answer cannot be mapped back onto the client's batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The origin rejected an index outside the chunk it was sent.
    #[error("origin rejected index {index} of a chunk of {len} events")]
    IndexOutOfRange {
        /// The index the origin reported.
        index: usize,
        /// How many events the chunk had.
        len: usize,
    },
}

/// The origin's answer to one forwarded chunk: events `forwarded[start..start + len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkAnswer {
    /// Position of the chunk's first event in the forwarded list.
    pub start: usize,
    /// Events in the chunk.
    pub len: usize,
    /// What the origin said.
    pub response: BatchResponse,
}

/// Client indexes of the events the edge forwards (those that passed validation), in order.
pub fn forwarded_indexes<T, E>(verdicts: &[Result<T, E>]) -> Vec<usize> {
    verdicts.iter().enumerate().filter(|(_, v)| v.is_ok()).map(|(i, _)| i).collect()
}

/// Merges the edge's rejections with the origins' answers, in client indexes, sorted by index.
pub fn merge(
    edge_rejected: Vec<Rejected>,
    forwarded: &[usize],
    answers: &[ChunkAnswer],
) -> Result<BatchResponse, MergeError> {
    let mut rejected = edge_rejected;
    let mut accepted = 0usize;
    for answer in answers {
        accepted = accepted.saturating_add(answer.response.accepted);
        for r in &answer.response.rejected {
            let out_of_range = MergeError::IndexOutOfRange { index: r.index, len: answer.len };
            if r.index >= answer.len {
                return Err(out_of_range);
            }
            let client = forwarded.get(answer.start + r.index).ok_or(out_of_range)?;
            rejected.push(Rejected { index: *client, code: r.code, field: r.field.clone() });
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(BatchResponse { accepted, rejected })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::RejectCode::{self, *};

    /// `(client index, code)` pairs, the shape every case is written in.
    type Pairs<'a> = &'a [(usize, RejectCode)];

    fn rej(index: usize, code: RejectCode) -> Rejected {
        Rejected { index, code, field: None }
    }

    fn answer(start: usize, len: usize, accepted: usize, rejected: &[(usize, RejectCode)]) -> ChunkAnswer {
        let rejected = rejected.iter().map(|(i, c)| rej(*i, *c)).collect();
        ChunkAnswer { start, len, response: BatchResponse { accepted, rejected } }
    }

    fn check(
        edge: Pairs<'_>,
        forwarded: &[usize],
        answers: &[ChunkAnswer],
        expected: Result<(usize, Pairs<'_>), MergeError>,
    ) {
        let edge = edge.iter().map(|(i, c)| rej(*i, *c)).collect();
        let got = merge(edge, forwarded, answers);
        let expected = expected
            .map(|(accepted, r)| BatchResponse { accepted, rejected: r.iter().map(|(i, c)| rej(*i, *c)).collect() });
        assert_eq!(got, expected, "{forwarded:?} {answers:?}");
    }

    #[test]
    fn table() {
        // Everything valid, everything stored.
        check(&[], &[0, 1, 2], &[answer(0, 3, 3, &[])], Ok((3, &[])));
        // Edge rejects 1 and 3; origin rejects its 1 = client 2.
        check(
            &[(1, InvalidId), (3, MissingName)],
            &[0, 2],
            &[answer(0, 2, 1, &[(1, Duplicate)])],
            Ok((1, &[(1, InvalidId), (2, Duplicate), (3, MissingName)])),
        );
        // Origin rejects its 0 = client 4, listed after the edge's 0..3.
        check(
            &[(0, NotAnObject), (1, NotAnObject), (2, NotAnObject), (3, NotAnObject)],
            &[4],
            &[answer(0, 1, 0, &[(0, InvalidField)])],
            Ok((0, &[(0, NotAnObject), (1, NotAnObject), (2, NotAnObject), (3, NotAnObject), (4, InvalidField)])),
        );
        // Two chunks: indexes are relative to each chunk.
        check(
            &[(2, InvalidId)],
            &[0, 1, 3, 4],
            &[answer(0, 2, 1, &[(1, Duplicate)]), answer(2, 2, 1, &[(0, InvalidType)])],
            Ok((2, &[(1, Duplicate), (2, InvalidId), (3, InvalidType)])),
        );
        // Nothing forwarded.
        check(&[(0, InvalidId)], &[], &[], Ok((0, &[(0, InvalidId)])));
        // The origin names an index it was never sent.
        check(
            &[],
            &[0, 1],
            &[answer(0, 2, 1, &[(2, Duplicate)])],
            Err(MergeError::IndexOutOfRange { index: 2, len: 2 }),
        );
        check(&[], &[0], &[answer(0, 3, 1, &[(2, Duplicate)])], Err(MergeError::IndexOutOfRange { index: 2, len: 3 }));
    }

    #[test]
    fn fields_survive_and_indexes_come_from_verdicts() {
        let verdicts: [Result<(), ()>; 5] = [Err(()), Ok(()), Err(()), Ok(()), Ok(())];
        let fwd = forwarded_indexes(&verdicts);
        assert_eq!(fwd, vec![1, 3, 4]);
        let origin = BatchResponse {
            accepted: 2,
            rejected: vec![Rejected { index: 1, code: InvalidField, field: Some("set".into()) }],
        };
        let got = merge(vec![], &fwd, &[ChunkAnswer { start: 0, len: 3, response: origin }]).unwrap();
        assert_eq!(got.rejected, vec![Rejected { index: 3, code: InvalidField, field: Some("set".into()) }]);
    }
}
