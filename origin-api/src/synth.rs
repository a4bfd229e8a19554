//! A deterministic synthetic data set: persons, sessions, a sign-up funnel, campaigns, bots.
//!
//! Pure: the same seed and end time give the same events, byte for byte (no clock, no thread
//! RNG). Each person has their own RNG seeded from `(seed, person index)`, so a person's events
//! do not depend on how many persons came before them, and a run of N events is a prefix of a
//! run of M > N events.
//!
//! Persons arrive at a uniform time over the window, come back 1 to 5 times a week (or never) and
//! churn week by week. A session is several page views a few seconds to minutes apart, with a
//! gap of at least an hour between sessions. The funnel page view -> `signed_up` -> `activated` ->
//! `purchased` loses 70%, then 50%, then 60% of persons; signing up sends an `identify` that
//! merges the anonymous history into the user. Events come out as [`EnrichedEvent`]s (what the
//! edge forwards: geography, user agent and bot flag per event); `event` is the protocol event.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use protocol::event::{Context, Event, Library, Screen, Utm};
use protocol::forward::{EnrichedEvent, Geo};
use protocol::EventType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// Events per batch the generator hands out.
pub const BATCH: usize = 100;
/// The second funnel step.
pub const SIGNUP_EVENT: &str = "signed_up";
/// The third funnel step.
pub const ACTIVATION_EVENT: &str = "activated";
/// The fourth funnel step.
pub const PURCHASE_EVENT: &str = "purchased";
/// The site every URL is on.
pub const HOST: &str = "shop.example.com";

/// Share of persons that are bots (crawlers, monitors).
const BOT_SHARE: f64 = 0.02;
/// Share of human persons that come once and never again.
const ONE_OFF_SHARE: f64 = 0.4;
/// Funnel conversion: sign-up among humans, activation among sign-ups, purchase among activations.
const SIGNUP_RATE: f64 = 0.3;
const ACTIVATION_RATE: f64 = 0.5;
const PURCHASE_RATE: f64 = 0.4;
/// Longest gap between two events of a session: analytics tools cut sessions at 30 minutes.
const MAX_IN_SESSION_GAP_SECS: i64 = 600;
/// Shortest gap between two sessions of a person.
const MIN_SESSION_GAP_SECS: i64 = 3600;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    /// Everything random follows from this.
    pub seed: u64,
    /// Length of the window, in days, ending at `end`.
    pub days: u32,
    /// End of the window (exclusive): no event is at or after it.
    pub end: DateTime<Utc>,
}

impl SynthConfig {
    /// Start of the window (inclusive).
    pub fn start(&self) -> DateTime<Utc> {
        self.end - Duration::days(i64::from(self.days))
    }
}

/// Batches of [`BATCH`] events (the last one may be shorter), exactly `total` events in all,
/// person after person, each person's events in time order.
#[derive(Debug, Clone)]
pub struct Synth {
    cfg: SynthConfig,
    next_person: u64,
    pending: VecDeque<EnrichedEvent>,
    remaining: usize,
}

impl Synth {
    /// A generator of `total` events.
    pub fn new(cfg: SynthConfig, total: usize) -> Synth {
        Synth { cfg, next_person: 0, pending: VecDeque::new(), remaining: total }
    }

    /// Persons started so far (the last one may be cut short by `total`).
    pub fn persons(&self) -> u64 {
        self.next_person
    }
}

impl Iterator for Synth {
    type Item = Vec<EnrichedEvent>;

    fn next(&mut self) -> Option<Vec<EnrichedEvent>> {
        let want = BATCH.min(self.remaining);
        if want == 0 {
            return None;
        }
        while self.pending.len() < want {
            self.pending.extend(person_events(&self.cfg, self.next_person));
            self.next_person += 1;
        }
        self.remaining -= want;
        Some(self.pending.drain(..want).collect())
    }
}

/// SplitMix64: spreads (seed, index) over the whole seed space so neighbouring persons get
/// unrelated streams.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Picks from `(weight, item)` pairs. Weights are positive integers.
fn pick<T: Copy>(rng: &mut StdRng, items: &[(u32, T)]) -> T {
    let total: u32 = items.iter().map(|(w, _)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (w, item) in items {
        if roll < *w {
            return *item;
        }
        roll -= w;
    }
    // Unreachable with positive weights; the last item keeps this total.
    items[items.len() - 1].1
}

/// Country, continent, client timezone, locale.
type Place = (&'static str, &'static str, &'static str, &'static str);
const COUNTRIES: &[(u32, Place)] = &[
    (30, ("US", "NA", "America/New_York", "en-US")),
    (12, ("DE", "EU", "Europe/Berlin", "de-DE")),
    (10, ("GB", "EU", "Europe/London", "en-GB")),
    (8, ("FR", "EU", "Europe/Paris", "fr-FR")),
    (8, ("IN", "AS", "Asia/Kolkata", "en-IN")),
    (6, ("BR", "SA", "America/Sao_Paulo", "pt-BR")),
    (5, ("CA", "NA", "America/Toronto", "en-CA")),
    (5, ("JP", "AS", "Asia/Tokyo", "ja-JP")),
    (4, ("NL", "EU", "Europe/Amsterdam", "nl-NL")),
    (4, ("ES", "EU", "Europe/Madrid", "es-ES")),
    (3, ("AU", "OC", "Australia/Sydney", "en-AU")),
    (3, ("PL", "EU", "Europe/Warsaw", "pl-PL")),
    (2, ("SE", "EU", "Europe/Stockholm", "sv-SE")),
];

/// User agent and screen.
type Agent = (&'static str, (u32, u32));
const AGENTS: &[(u32, Agent)] = &[
    (35, ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", (1920, 1080))),
    (15, ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", (1440, 900))),
    (20, ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", (412, 915))),
    (18, ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", (390, 844))),
    (5, ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", (1920, 1200))),
    (5, ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", (1536, 864))),
    (2, ("Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", (820, 1180))),
];
const BOT_AGENTS: &[(u32, Agent)] = &[
    (4, ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", (1024, 768))),
    (2, ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", (1024, 768))),
    (2, ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", (1024, 768))),
    (1, ("python-requests/2.32.3", (0, 0))),
    (1, ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", (800, 600))),
];

/// How a person first came: referrer, (utm source, medium, campaign), landing page.
type Source = (Option<&'static str>, Option<(&'static str, &'static str, &'static str)>, &'static str);
const SOURCES: &[(u32, Source)] = &[
    (30, (None, None, "/")),
    (25, (Some("https://www.google.com/"), None, "/")),
    (10, (None, Some(("newsletter", "email", "december")), "/")),
    (10, (Some("https://www.google.com/"), Some(("google", "cpc", "black-friday")), "/pricing")),
    (8, (Some("https://www.facebook.com/"), Some(("facebook", "social", "spring-launch")), "/features")),
    (5, (Some("https://t.co/"), None, "/blog/launch")),
    (5, (Some("https://www.producthunt.com/"), Some(("producthunt", "referral", "launch-day")), "/")),
    (4, (Some("https://github.com/"), None, "/docs/getting-started")),
    (3, (Some("https://news.ycombinator.com/"), None, "/blog/postgres-at-scale")),
];

/// Where a visitor goes next from a page (the funnel pages are added by the funnel, not here).
fn next_page(rng: &mut StdRng, from: &str, signed_up: bool) -> &'static str {
    const PUBLIC: &[(u32, &str)] = &[
        (20, "/"),
        (18, "/pricing"),
        (15, "/features"),
        (10, "/blog"),
        (8, "/blog/launch"),
        (6, "/blog/postgres-at-scale"),
        (10, "/docs/getting-started"),
        (5, "/docs/api"),
        (4, "/about"),
        (4, "/signup"),
    ];
    const APP: &[(u32, &str)] =
        &[(30, "/app/dashboard"), (20, "/app/reports"), (10, "/app/settings"), (10, "/app/funnels"), (5, "/pricing")];
    const FROM_HOME: &[(u32, &str)] = &[
        (30, "/pricing"),
        (25, "/features"),
        (15, "/blog"),
        (15, "/docs/getting-started"),
        (10, "/about"),
        (5, "/signup"),
    ];
    match from {
        "/" if !signed_up => pick(rng, FROM_HOME),
        "/docs/getting-started" => pick(rng, &[(3, "/docs/api"), (1, "/"), (1, "/pricing")]),
        "/blog" => pick(rng, &[(3, "/blog/launch"), (2, "/blog/postgres-at-scale"), (1, "/")]),
        _ if signed_up && rng.random_bool(0.7) => pick(rng, APP),
        _ => pick(rng, PUBLIC),
    }
}

fn title_of(path: &str) -> &'static str {
    match path {
        "/" => "Shop - analytics that scale",
        "/pricing" => "Pricing - Shop",
        "/signup" => "Sign up - Shop",
        p if p.starts_with("/app/") => "Dashboard - Shop",
        p if p.starts_with("/docs/") => "Docs - Shop",
        p if p.starts_with("/blog") => "Blog - Shop",
        _ => "Shop",
    }
}

/// Builds one person's events; holds what stays the same across their events.
struct Person<'a> {
    rng: StdRng,
    cfg: &'a SynthConfig,
    anonymous_id: String,
    user_id: Option<String>,
    place: Place,
    agent: Agent,
    bot: bool,
    out: Vec<EnrichedEvent>,
}

impl Person<'_> {
    /// Appends an event at `t` (the caller adds the landing page's referrer and campaign).
    fn push(&mut self, t: DateTime<Utc>, kind: EventType, name: &str, path: &str, props: Map<String, Value>) {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let millis = u64::try_from(t.timestamp_millis()).unwrap_or(0);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let (country, continent, timezone, locale) = self.place;
        let (ua, (width, height)) = self.agent;
        let event = Event {
            id,
            kind,
            name: name.to_owned(),
            anonymous_id: Some(self.anonymous_id.clone()),
            user_id: self.user_id.clone(),
            session_id: None,
            timestamp: t,
            properties: props,
            set: Map::new(),
            set_once: Map::new(),
            group_type: None,
            group_key: None,
            previous_id: None,
            context: Context {
                url: Some(format!("https://{HOST}{path}")),
                path: Some(path.to_owned()),
                title: Some(title_of(path).to_owned()),
                referrer: None,
                utm: Utm::default(),
                screen: (width > 0).then_some(Screen { width, height }),
                locale: Some(locale.to_owned()),
                timezone: Some(timezone.to_owned()),
                library: Some(Library { name: "nexus-js".into(), version: "0.1.0".into() }),
                extra: Map::new(),
            },
            extra: Map::new(),
        };
        self.out.push(EnrichedEvent {
            event,
            // The edge received it a moment later; no sent_at, so no skew to correct.
            received_at: t + Duration::milliseconds(150),
            sent_at: None,
            timestamp: t,
            geo: Geo {
                country: Some(country.into()),
                continent: Some(continent.into()),
                timezone: Some(timezone.into()),
                ..Geo::default()
            },
            visitor_hash: None,
            bot: self.bot,
            user_agent: Some(ua.to_owned()),
        });
    }

    /// Seconds to the next event of a session: mostly short, sometimes a long read.
    fn in_session_gap(&mut self) -> Duration {
        let secs = if self.bot { self.rng.random_range(1..5) } else { self.rng.random_range(5..90) };
        let long = !self.bot && self.rng.random_bool(0.15);
        Duration::seconds(if long { self.rng.random_range(90..MAX_IN_SESSION_GAP_SECS) } else { secs })
    }

    fn page(&mut self, t: DateTime<Utc>, path: &str) {
        let props = match self.user_id {
            Some(_) => json_map(json!({"logged_in": true})),
            None => Map::new(),
        };
        self.push(t, EventType::Page, protocol::kind::PAGEVIEW_NAME, path, props);
    }
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Funnel progress of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Visitor,
    SignedUp,
    Activated,
    Purchased,
}

/// The events of person `index`, in time order, all in `[cfg.start(), cfg.end)`.
pub fn person_events(cfg: &SynthConfig, index: u64) -> Vec<EnrichedEvent> {
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(index)));
    let bot = rng.random_bool(BOT_SHARE);
    let place = pick(&mut rng, COUNTRIES);
    let agent = pick(&mut rng, if bot { BOT_AGENTS } else { AGENTS });
    let source = pick(&mut rng, SOURCES);
    let tag: u32 = rng.random();
    let mut p = Person {
        cfg,
        anonymous_id: format!("anon-{tag:08x}-{index}"),
        user_id: None,
        place,
        agent,
        // The verdict the edge would give this user agent.
        bot: protocol::bot::is_bot_user_agent(Some(agent.0)),
        out: Vec::new(),
        rng,
    };
    let span = i64::from(cfg.days.max(1)) * 86_400;
    let mut t = cfg.start() + Duration::seconds(p.rng.random_range(0..span));
    // Engagement: one-off visitors never return; the others come 1-5 times a week and churn.
    let weekly: f64 = if bot {
        1.5
    } else if p.rng.random_bool(ONE_OFF_SHARE) {
        0.0
    } else {
        p.rng.random_range(1.0..=5.0)
    };
    let churn_per_week: f64 = if bot { 0.0 } else { p.rng.random_range(0.05..0.35) };
    let will_signup = !bot && p.rng.random_bool(SIGNUP_RATE);
    let will_activate = will_signup && p.rng.random_bool(ACTIVATION_RATE);
    let will_purchase = will_activate && p.rng.random_bool(PURCHASE_RATE);
    // Sign-up in the first, second or third session (the first when there is no other).
    let signup_session = if weekly > 0.0 { p.rng.random_range(0..3u32) } else { 0 };
    let plan = pick(&mut p.rng, &[(5, "starter"), (3, "pro"), (1, "team")]);
    let mut stage = Stage::Visitor;
    let mut purchase_pending = false;
    let mut session = 0u32;
    while t < cfg.end {
        let sid = format!("s-{tag:08x}-{index}-{session}");
        let first_event = p.out.len();
        // Landing: the acquisition source on the first session, then mostly direct.
        let (referrer, utm, mut path) = if session == 0 {
            source
        } else if stage != Stage::Visitor && p.rng.random_bool(0.6) {
            (None, None, "/app/dashboard")
        } else {
            (None, None, "/")
        };
        let pages = if bot { p.rng.random_range(5..25) } else { 1 + geometric(&mut p.rng, 0.3, 11) };
        p.page(t, path);
        if let Some(e) = p.out.last_mut() {
            let ctx = &mut e.event.context;
            ctx.referrer = referrer.map(str::to_owned);
            if let Some((source, medium, campaign)) = utm {
                ctx.utm = Utm {
                    source: Some(source.into()),
                    medium: Some(medium.into()),
                    campaign: Some(campaign.into()),
                    ..Utm::default()
                };
                ctx.url = Some(format!(
                    "https://{HOST}{path}?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
                ));
            }
        }
        for _ in 1..pages {
            t += p.in_session_gap();
            path = if bot { pick(&mut p.rng, BOT_PATHS) } else { next_page(&mut p.rng, path, stage != Stage::Visitor) };
            p.page(t, path);
            if !bot {
                t = sprinkle(&mut p, t, path);
            }
        }
        if purchase_pending {
            t = purchase(&mut p, t, plan);
            purchase_pending = false;
            stage = Stage::Purchased;
        }
        if will_signup && stage == Stage::Visitor && session >= signup_session {
            t += p.in_session_gap();
            p.page(t, "/signup");
            t += Duration::seconds(p.rng.random_range(20..180));
            let user_id = format!("user-{tag:08x}-{index}");
            p.user_id = Some(user_id);
            p.push(t, EventType::Track, SIGNUP_EVENT, "/signup", json_map(json!({"plan": plan})));
            t += Duration::seconds(1);
            p.push(t, EventType::Identify, protocol::kind::IDENTIFY_NAME, "/signup", Map::new());
            if let Some(e) = p.out.last_mut() {
                e.event.set = json_map(json!({"plan": plan, "country": place.0}));
                e.event.set_once = json_map(json!({"first_source": utm.map(|u| u.0).unwrap_or("direct")}));
            }
            stage = Stage::SignedUp;
            if will_activate {
                t += Duration::seconds(p.rng.random_range(30..MAX_IN_SESSION_GAP_SECS));
                p.page(t, "/app/onboarding");
                t += Duration::seconds(p.rng.random_range(30..MAX_IN_SESSION_GAP_SECS));
                p.push(t, EventType::Track, ACTIVATION_EVENT, "/app/onboarding", json_map(json!({"plan": plan})));
                stage = Stage::Activated;
                // Half buy at once, half come back for it in a later session.
                if will_purchase && p.rng.random_bool(0.5) {
                    t = purchase(&mut p, t, plan);
                    stage = Stage::Purchased;
                } else {
                    purchase_pending = will_purchase;
                }
            }
        }
        // Every event of this session gets its id; events past the end are cut off.
        for e in &mut p.out[first_event..] {
            e.event.session_id = Some(sid.clone());
        }
        session += 1;
        // The next session, unless the person is gone. A pending purchase brings them back
        // within a few days (inside a 7-day funnel window).
        let next_gap_days = if purchase_pending {
            p.rng.random_range(0.5..6.0)
        } else if weekly == 0.0 {
            break;
        } else {
            let days = -(1.0 - p.rng.random::<f64>()).ln() * 7.0 / weekly;
            if p.rng.random_bool((churn_per_week * days / 7.0).min(1.0)) {
                break;
            }
            days
        };
        let gap = (next_gap_days * 86_400.0) as i64;
        t += Duration::seconds(gap.max(MIN_SESSION_GAP_SECS));
    }
    let end = p.cfg.end;
    p.out.retain(|e| e.timestamp < end);
    p.out
}

const BOT_PATHS: &[(u32, &str)] =
    &[(3, "/"), (2, "/pricing"), (2, "/features"), (2, "/blog"), (1, "/docs/api"), (1, "/about"), (1, "/robots.txt")];

/// `1 + k` with probability `(1 - p)^k p`, capped at `max`.
fn geometric(rng: &mut StdRng, p: f64, max: u32) -> u32 {
    let mut k = 0;
    while k < max && !rng.random_bool(p) {
        k += 1;
    }
    k
}

/// Occasional track events on a page (product events with properties).
fn sprinkle(p: &mut Person<'_>, mut t: DateTime<Utc>, path: &str) -> DateTime<Utc> {
    let roll: f64 = p.rng.random();
    let event = match path {
        "/features" if roll < 0.25 => {
            Some(("video_played", json!({"video": "tour", "seconds": (roll * 400.0) as i64})))
        }
        p if p.starts_with("/docs") && roll < 0.3 => Some(("search", json!({"query": "funnel api"}))),
        "/pricing" if roll < 0.3 => Some(("plan_viewed", json!({"plan": "pro", "price": 29}))),
        p if p.starts_with("/app/") && roll < 0.4 => Some(("report_created", json!({"kind": "trends"}))),
        _ => None,
    };
    if let Some((name, props)) = event {
        t += Duration::seconds(p.rng.random_range(3..60));
        p.push(t, EventType::Track, name, path, json_map(props));
    }
    t
}

fn purchase(p: &mut Person<'_>, mut t: DateTime<Utc>, plan: &str) -> DateTime<Utc> {
    let price = match plan {
        "starter" => 9,
        "pro" => 29,
        _ => 99,
    };
    t += Duration::seconds(p.rng.random_range(20..MAX_IN_SESSION_GAP_SECS));
    p.page(t, "/checkout");
    t += Duration::seconds(p.rng.random_range(20..300));
    let props = json_map(json!({"plan": plan, "price": price, "currency": "EUR"}));
    p.push(t, EventType::Track, PURCHASE_EVENT, "/checkout", props);
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn cfg(seed: u64) -> SynthConfig {
        SynthConfig { seed, days: 90, end: "2026-12-01T00:00:00Z".parse().unwrap() }
    }

    fn all(seed: u64, total: usize) -> Vec<EnrichedEvent> {
        Synth::new(cfg(seed), total).flatten().collect()
    }

    #[test]
    fn batches_are_full_and_total_exact() {
        for (total, batches, last) in [(0, 0, 0), (1, 1, 1), (100, 1, 100), (250, 3, 50), (1000, 10, 100)] {
            let sizes: Vec<usize> = Synth::new(cfg(1), total).map(|b| b.len()).collect();
            assert_eq!(sizes.len(), batches, "{total}");
            assert_eq!(sizes.last().copied().unwrap_or(0), last, "{total}");
            assert!(sizes.iter().rev().skip(1).all(|&s| s == BATCH), "{total}");
        }
    }

    #[test]
    fn deterministic_per_seed_and_prefix_stable() {
        let a = serde_json::to_string(&all(7, 3000)).unwrap();
        let b = serde_json::to_string(&all(7, 3000)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, serde_json::to_string(&all(8, 3000)).unwrap());
        let short = all(7, 1234);
        assert_eq!(short[..], all(7, 3000)[..1234]);
    }

    #[test]
    fn persons_in_time_order_inside_the_window_with_sessions() {
        let c = cfg(3);
        let mut by_person: HashMap<String, Vec<EnrichedEvent>> = HashMap::new();
        let events = all(3, 20_000);
        let ids: HashSet<_> = events.iter().map(|e| e.event.id).collect();
        assert_eq!(ids.len(), events.len(), "event ids are unique");
        for e in events {
            assert!(e.timestamp >= c.start() && e.timestamp < c.end, "{}", e.timestamp);
            assert!(protocol::validate::check_typed(&e.event).is_ok());
            by_person.entry(e.event.anonymous_id.clone().unwrap()).or_default().push(e);
        }
        let (mut sessions, mut pages) = (0usize, 0usize);
        for evs in by_person.values() {
            for w in evs.windows(2) {
                assert!(w[0].timestamp <= w[1].timestamp, "time order");
                let gap = (w[1].timestamp - w[0].timestamp).num_seconds();
                if w[0].event.session_id == w[1].event.session_id {
                    assert!(gap < 30 * 60, "in-session gap {gap}");
                } else {
                    assert!(gap >= MIN_SESSION_GAP_SECS, "inactivity between sessions {gap}");
                }
            }
            sessions += evs.iter().map(|e| e.event.session_id.clone()).collect::<HashSet<_>>().len();
            pages += evs.iter().filter(|e| e.event.kind == EventType::Page).count();
        }
        let per_session = pages as f64 / sessions as f64;
        assert!((2.0..6.0).contains(&per_session), "pages per session {per_session}");
        let returning = by_person.values().filter(|e| e.last().unwrap().event.session_id != e[0].event.session_id);
        let share = returning.count() as f64 / by_person.len() as f64;
        assert!((0.3..0.8).contains(&share), "returning persons {share}");
    }

    #[test]
    fn funnel_drops_off_and_identify_merges() {
        let c = cfg(5);
        let (mut humans, mut steps) = (0usize, [0usize; 3]);
        for i in 0..4000 {
            let evs = person_events(&c, i);
            let Some(first) = evs.first() else { continue };
            if first.bot {
                assert!(evs.iter().all(|e| e.bot && e.event.user_id.is_none()));
                continue;
            }
            humans += 1;
            let at = |name: &str| evs.iter().position(|e| e.event.name == name);
            let (s, a, p) = (at(SIGNUP_EVENT), at(ACTIVATION_EVENT), at(PURCHASE_EVENT));
            for (k, step) in [s, a, p].into_iter().enumerate() {
                steps[k] += usize::from(step.is_some());
            }
            // Each step after the one before; identify right after the sign-up, then every
            // event names the user and keeps the anonymous id.
            assert!(a.is_none() || a > s);
            assert!(p.is_none() || p > a);
            if let Some(s) = s {
                let identify = &evs[s + 1].event;
                assert_eq!(identify.kind, EventType::Identify);
                assert!(identify.user_id.is_some() && identify.anonymous_id.is_some());
                assert_eq!(identify.set["plan"], evs[s].event.properties["plan"]);
                assert!(evs[..s].iter().all(|e| e.event.user_id.is_none()));
                assert!(evs[s..].iter().all(|e| e.event.user_id == identify.user_id));
            }
        }
        let rate = |a: usize, b: usize| a as f64 / b as f64;
        let (signup, activation, purchase) =
            (rate(steps[0], humans), rate(steps[1], steps[0]), rate(steps[2], steps[1]));
        assert!((0.26..0.34).contains(&signup), "sign-up rate {signup}");
        assert!((0.44..0.56).contains(&activation), "activation rate {activation}");
        // A late purchase can fall after the window's end.
        assert!((0.30..0.46).contains(&purchase), "purchase rate {purchase}");
    }

    #[test]
    fn variety_of_sources_places_devices_and_bots() {
        let events = all(11, 30_000);
        let distinct = |f: &dyn Fn(&EnrichedEvent) -> Option<String>| -> usize {
            events.iter().filter_map(f).collect::<HashSet<_>>().len()
        };
        let cases: [(&str, usize, usize); 5] = [
            ("campaigns", distinct(&|e| e.event.context.utm.campaign.clone()), 4),
            ("referrers", distinct(&|e| e.event.context.referrer.clone()), 5),
            ("countries", distinct(&|e| e.geo.country.clone()), 10),
            ("user agents", distinct(&|e| e.user_agent.clone()), 8),
            ("event names", distinct(&|e| Some(e.event.name.clone())), 8),
        ];
        for (what, got, at_least) in cases {
            assert!(got >= at_least, "{what}: {got}");
        }
        let bots = events.iter().filter(|e| e.bot).count();
        assert!(bots > 0 && bots < events.len() / 5, "bot events {bots}");
        let priced = events.iter().filter(|e| e.event.name == PURCHASE_EVENT);
        assert!(priced.clone().count() > 0);
        assert!(priced.into_iter().all(|e| e.event.properties["price"].is_number()));
    }

    #[test]
    fn ndjson_lines_pass_validation_unchanged() {
        // What `generate | import` does with each line.
        for e in all(13, 2000) {
            let line = serde_json::to_string(&e.event).unwrap();
            assert_eq!(protocol::validate::validate_event_json(&line).unwrap(), e.event, "{line}");
        }
    }

    #[test]
    fn pick_follows_weights() {
        let mut rng = StdRng::seed_from_u64(1);
        let items = [(1u32, "a"), (3, "b"), (0, "never")];
        let mut counts = HashMap::new();
        for _ in 0..4000 {
            *counts.entry(pick(&mut rng, &items)).or_insert(0) += 1;
        }
        assert_eq!(counts.get("never"), None);
        let b = f64::from(counts["b"]) / 4000.0;
        assert!((0.7..0.8).contains(&b), "{b}");
    }
}
