//! HMAC-SHA256 signatures on edge -> origin requests, made at the moment of sending.
//!
//! The signed message is `"{timestamp}." + body`; the origin refuses a wrong signature and a
//! timestamp outside the replay window, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header with the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-nexus-timestamp";
/// Header with the signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-nexus-signature";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing, or not of the expected form.
    #[error("signature headers are missing or malformed")]
    Malformed,
    /// The MAC does not match.
    #[error("signature does not match")]
    Mismatch,
    /// The timestamp is too far from the verifier's clock.
    #[error("signature timestamp is outside the replay window")]
    Expired,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The value of [`SIGNATURE_HEADER`] for this body at this time.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Verifies the two headers against the body, in constant time, at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp_header.and_then(|s| s.trim().parse().ok()).ok_or(SignatureError::Malformed)?;
    let sig = signature_header
        .and_then(|s| s.trim().strip_prefix("v1="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed)?;
    mac(secret, ts, body).verify_slice(&sig).map_err(|_| SignatureError::Mismatch)?;
    if now.abs_diff(ts) > window_secs.unsigned_abs() {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let secret = b"s3cret";
        let body = br#"{"events":[]}"#;
        let now = 1_764_583_200;
        let good = sign(secret, now, body);
        let ts = now.to_string();
        #[allow(clippy::type_complexity)] // one row per case reads better than a struct here
        let cases: [(&[u8], Option<&str>, Option<&str>, &[u8], i64, Result<(), SignatureError>); 9] = [
            (secret, Some(&ts), Some(&good), body, now, Ok(())),
            (secret, Some(&ts), Some(&good), body, now + 299, Ok(())),
            (secret, Some(&ts), Some(&good), body, now + 301, Err(SignatureError::Expired)),
            (secret, Some(&ts), Some(&good), body, now - 301, Err(SignatureError::Expired)),
            (b"other", Some(&ts), Some(&good), body, now, Err(SignatureError::Mismatch)),
            (secret, Some(&ts), Some(&good), b"{}", now, Err(SignatureError::Mismatch)),
            (secret, Some("1764583201"), Some(&good), body, now, Err(SignatureError::Mismatch)),
            (secret, None, Some(&good), body, now, Err(SignatureError::Malformed)),
            (secret, Some(&ts), Some("v1=zz"), body, now, Err(SignatureError::Malformed)),
        ];
        for (i, (sec, t, s, b, n, expected)) in cases.into_iter().enumerate() {
            assert_eq!(verify(sec, t, s, b, n, 300), expected, "case {i}");
        }
    }
}
