//! The origin's enrichment step: typed columns from the URL, the referrer and the user agent.
//!
//! Pure: takes the enriched event, returns the derived fields. User agents are parsed with the
//! woothee crate (a maintained, dependency-free parser shared with other languages).

use std::sync::Arc;

use ahash::AHashMap as HashMap;
use protocol::forward::EnrichedEvent;

use url::Url;

use super::channel::{classify, Channel, Signals};

/// Fields the origin derives for every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    /// Host of the page URL.
    pub host: Option<String>,
    /// Host of the referrer, `www.` removed; absent when it is the page's own host.
    pub referrer_domain: Option<String>,
    /// Channel grouping of the visit.
    pub channel: Option<&'static str>,
    /// UTM tags (from `context.utm`, else from the page URL).
    pub utm: [Option<String>; 5],
    /// Browser name.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device_type: Option<&'static str>,
}

fn host_of(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let h = u.host_str()?.to_ascii_lowercase();
    Some(h.strip_prefix("www.").map(str::to_owned).unwrap_or(h))
}

fn device_type(category: &str, ua: &str) -> &'static str {
    match category {
        "pc" => "desktop",
        "smartphone"
            if ua.contains("iPad") || ua.contains("Tablet") || (ua.contains("Android") && !ua.contains("Mobile")) =>
        {
            "tablet"
        }
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "bot",
        _ => "other",
    }
}

/// Browser, OS and device type of a user agent.
type Agent = (Option<String>, Option<String>, Option<&'static str>);

fn agent(ua: Option<&str>, bot: bool) -> Agent {
    match ua {
        Some(ua) => match woothee::parser::Parser::new().parse(ua) {
            Some(r) => {
                let known = |s: &str| (s != "UNKNOWN" && !s.is_empty()).then(|| s.to_owned());
                (known(r.name), known(r.os), Some(if bot { "bot" } else { device_type(r.category, ua) }))
            }
            None => (None, None, Some(if bot { "bot" } else { "other" })),
        },
        None => (None, None, None),
    }
}

/// Derives the typed columns of a batch. The events of one request share a user agent and a
/// few pages, so each distinct user agent and page is parsed once, and each distinct
/// combination of the two is one shared value: an event costs a reference count, not a copy
/// of nine strings (cloning and dropping those was a tenth of the writer's time).
pub fn derive_all(events: &[EnrichedEvent]) -> Vec<Arc<Derived>> {
    let mut agents: HashMap<(Option<&str>, bool), Agent> = HashMap::default();
    let mut places: HashMap<PlaceKey<'_>, Place> = HashMap::default();
    let mut derived: HashMap<(PlaceKey<'_>, Option<&str>, bool), Arc<Derived>> = HashMap::default();
    events
        .iter()
        .map(|e| {
            let (ua, bot, key) = (e.user_agent.as_deref(), e.bot, place_key(e));
            derived
                .entry((key, ua, bot))
                .or_insert_with(|| {
                    let agent = agents.entry((ua, bot)).or_insert_with(|| agent(ua, bot)).clone();
                    let place = places.entry(key).or_insert_with(|| place(e)).clone();
                    Arc::new(with_place(place, agent))
                })
                .clone()
        })
        .collect()
}

/// Derives the typed columns of one event.
pub fn derive(e: &EnrichedEvent) -> Derived {
    derive_with(e, agent(e.user_agent.as_deref(), e.bot))
}

/// What the page URL, the referrer and the UTM tags give: the same for every event of a page,
/// so [`derive_all`] computes it once per distinct page of a batch.
type Place = (Option<String>, Option<String>, Channel, [Option<String>; 5]);

/// The inputs of a [`Place`].
type PlaceKey<'a> = (Option<&'a str>, Option<&'a str>, [Option<&'a str>; 5]);

fn place_key(e: &EnrichedEvent) -> PlaceKey<'_> {
    let ctx = &e.event.context;
    let u = &ctx.utm;
    (
        ctx.url.as_deref(),
        ctx.referrer.as_deref(),
        [u.source.as_deref(), u.medium.as_deref(), u.campaign.as_deref(), u.term.as_deref(), u.content.as_deref()],
    )
}

fn derive_with(e: &EnrichedEvent, agent: Agent) -> Derived {
    with_place(place(e), agent)
}

fn with_place((host, referrer_domain, channel, utm): Place, (browser, os, device): Agent) -> Derived {
    Derived { host, referrer_domain, channel: Some(channel.as_str()), utm, browser, os, device_type: device }
}

fn place(e: &EnrichedEvent) -> Place {
    let ctx = &e.event.context;
    let page = ctx.url.as_deref().and_then(|u| Url::parse(u).ok());
    let host = page.as_ref().and_then(|u| u.host_str()).map(|h| h.to_ascii_lowercase());
    let page_host = host.as_deref().map(|h| h.strip_prefix("www.").unwrap_or(h).to_owned());
    let referrer_domain = ctx.referrer.as_deref().and_then(host_of).filter(|r| Some(r) != page_host.as_ref());
    let query =
        |k: &str| page.as_ref().and_then(|u| u.query_pairs().find(|(key, _)| key == k).map(|(_, v)| v.into_owned()));
    let pick = |tag: &Option<String>, param: &str| tag.clone().or_else(|| query(param)).filter(|s| !s.is_empty());
    let utm = [
        pick(&ctx.utm.source, "utm_source"),
        pick(&ctx.utm.medium, "utm_medium"),
        pick(&ctx.utm.campaign, "utm_campaign"),
        pick(&ctx.utm.term, "utm_term"),
        pick(&ctx.utm.content, "utm_content"),
    ];
    let channel: Channel = classify(Signals {
        referrer_domain: referrer_domain.as_deref(),
        utm_source: utm[0].as_deref(),
        utm_medium: utm[1].as_deref(),
        search_click_id: query("gclid").is_some() || query("msclkid").is_some(),
        social_click_id: query("fbclid").is_some(),
    });
    (host, referrer_domain, channel, utm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::forward::{enrich, RequestContext};
    use serde_json::json;

    fn event(url: &str, referrer: Option<&str>, ua: Option<&str>) -> EnrichedEvent {
        let raw = json!({
            "id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "type": "page", "anonymous_id": "a",
            "timestamp": "2026-12-01T10:00:00Z", "context": {"url": url, "referrer": referrer},
        });
        let ctx = RequestContext { user_agent: ua.map(str::to_owned), bot: false, ..RequestContext::default() };
        enrich(protocol::validate::validate_event(raw).unwrap(), &ctx)
    }

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

    #[test]
    fn table() {
        let d = derive(&event(
            "https://www.shop.test/p?utm_source=newsletter&utm_medium=email",
            Some("https://mail.example.com/"),
            Some(CHROME_MAC),
        ));
        assert_eq!(d.host.as_deref(), Some("www.shop.test"));
        assert_eq!(d.referrer_domain.as_deref(), Some("mail.example.com"));
        assert_eq!(d.channel, Some("email"));
        assert_eq!(d.utm[0].as_deref(), Some("newsletter"));
        assert_eq!((d.browser.as_deref(), d.device_type), (Some("Chrome"), Some("desktop")));
        assert!(d.os.as_deref().unwrap().starts_with("Mac"), "{:?}", d.os);

        let d = derive(&event("https://shop.test/", Some("https://shop.test/cart"), Some(IPHONE)));
        assert_eq!(d.referrer_domain, None, "an internal referrer is not a source");
        assert_eq!((d.channel, d.device_type), (Some("direct"), Some("mobile")));

        let d = derive(&event("https://shop.test/?gclid=abc", Some("https://www.google.com/"), Some(IPAD)));
        assert_eq!((d.channel, d.device_type), (Some("paid_search"), Some("tablet")));

        let d = derive(&event("not a url", Some("also not"), None));
        assert_eq!((d.host, d.referrer_domain, d.channel, d.device_type), (None, None, Some("direct"), None));
    }
}
