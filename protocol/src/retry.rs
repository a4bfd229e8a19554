//! Which answers a sender may retry: network errors, 5xx and 429, never another 4xx.

/// True when a request that got this HTTP status should be sent again later.
///
/// A 4xx other than 429 means the request itself is wrong: resending it cannot help and would
/// only repeat the rejection.
pub fn should_retry(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::should_retry;

    #[test]
    fn retry_table() {
        let cases = [
            (200, false),
            (202, false),
            (400, false),
            (401, false),
            (403, false),
            (408, true),
            (413, false),
            (415, false),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (599, true),
        ];
        for (status, expected) in cases {
            assert_eq!(should_retry(status), expected, "status {status}");
        }
    }
}
