//! A first bot verdict from the user agent. Bots are flagged, never silently dropped.
//!
//! Hand-written on purpose: the regex-based lists (isbot) add several hundred KiB of wasm to the
//! edge worker. Substring checks on the lowercased user agent cover the common crawlers, HTTP
//! libraries and headless browsers.

/// Lowercase fragments that mark a non-human user agent.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "lighthouse",
    "pagespeed",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "undici",
    "libwww",
    "scrapy",
    "facebookexternalhit",
    "embedly",
    "preview",
    "monitor",
    "uptime",
    "pingdom",
    "datadog",
    "feedfetcher",
    "reqwest",
];

/// True when the user agent is missing, empty, or names a known automated client.
pub fn is_bot_user_agent(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent.map(str::trim).filter(|s| !s.is_empty()) else {
        return true;
    };
    let ua = ua.to_ascii_lowercase();
    BOT_MARKERS.iter().any(|m| ua.contains(m))
}

#[cfg(test)]
mod tests {
    use super::is_bot_user_agent;

    #[test]
    fn table() {
        let cases = [
            (None, true),
            (Some(""), true),
            (Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), false),
            (Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"), false),
            (Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"), true),
            (Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"), true),
            (Some("curl/8.5.0"), true),
            (Some("python-requests/2.31"), true),
        ];
        for (ua, expected) in cases {
            assert_eq!(is_bot_user_agent(ua), expected, "{ua:?}");
        }
    }
}
