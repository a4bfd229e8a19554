//! Channel grouping: where a visit came from, from its referrer, UTM tags and click ids.
//!
//! Rules in the spirit of GA4's default channel grouping, evaluated in order: paid click ids and
//! paid media first, then email/affiliate/display media, social and search by source or referrer
//! domain, then any other external referrer, else direct.

/// A channel. Stored as its `as_str` spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// No referrer and no campaign.
    Direct,
    /// A search engine, unpaid.
    OrganicSearch,
    /// A search ad (gclid, msclkid, or a paid medium on a search source).
    PaidSearch,
    /// A social network, unpaid.
    OrganicSocial,
    /// A social ad.
    PaidSocial,
    /// An email campaign.
    Email,
    /// An affiliate.
    Affiliate,
    /// Display advertising.
    Display,
    /// Another website.
    Referral,
    /// Tagged with a campaign this grouping does not recognise.
    Other,
}

impl Channel {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::OrganicSearch => "organic_search",
            Channel::PaidSearch => "paid_search",
            Channel::OrganicSocial => "organic_social",
            Channel::PaidSocial => "paid_social",
            Channel::Email => "email",
            Channel::Affiliate => "affiliate",
            Channel::Display => "display",
            Channel::Referral => "referral",
            Channel::Other => "other",
        }
    }
}

const SEARCH: &[&str] = &[
    "google",
    "bing",
    "duckduckgo",
    "yahoo",
    "baidu",
    "yandex",
    "ecosia",
    "startpage",
    "search.brave",
    "qwant",
    "naver",
    "seznam",
    "kagi",
    "perplexity",
];
const SOCIAL: &[&str] = &[
    "facebook",
    "fb",
    "instagram",
    "t.co",
    "twitter",
    "x.com",
    "linkedin",
    "lnkd.in",
    "reddit",
    "pinterest",
    "tiktok",
    "youtube",
    "mastodon",
    "threads.net",
    "bsky",
    "snapchat",
    "quora",
    "vk.com",
    "weibo",
];

/// True when `host_or_source` names one of `list` as a label-aligned part (`www.google.de`,
/// `google`, `m.facebook.com`), never as a substring of another word (`notgoogle.com`).
fn matches(host_or_source: &str, list: &[&str]) -> bool {
    let h = host_or_source.trim().to_ascii_lowercase();
    let h = h.strip_prefix("www.").unwrap_or(&h);
    list.iter().any(|name| {
        if name.contains('.') {
            // `h` is `name` or ends with `.name`; compared in place because this runs for every
            // event and list entry (a `format!` here was the ingest's largest allocation site).
            h.strip_suffix(name).is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        } else {
            h.split('.').any(|label| label == *name)
        }
    })
}

/// What the classifier looks at, all already lowercased or absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Signals<'a> {
    /// Host of the referrer, when it is another site than the page's.
    pub referrer_domain: Option<&'a str>,
    /// `utm_source`.
    pub utm_source: Option<&'a str>,
    /// `utm_medium`.
    pub utm_medium: Option<&'a str>,
    /// The landing URL carries `gclid` or `msclkid` (search ads).
    pub search_click_id: bool,
    /// The landing URL carries `fbclid` (a click from Facebook/Instagram).
    pub social_click_id: bool,
}

/// The channel of a visit.
pub fn classify(s: Signals<'_>) -> Channel {
    let medium = s.utm_medium.map(str::to_ascii_lowercase);
    let medium = medium.as_deref();
    let source = s.utm_source;
    let paid = matches!(
        medium,
        Some(
            "cpc"
                | "ppc"
                | "paid"
                | "paidsearch"
                | "paid_search"
                | "paid-social"
                | "paidsocial"
                | "paid_social"
                | "cpm"
                | "retargeting"
        )
    );
    let social_source =
        source.is_some_and(|x| matches(x, SOCIAL)) || s.referrer_domain.is_some_and(|d| matches(d, SOCIAL));
    let search_source =
        source.is_some_and(|x| matches(x, SEARCH)) || s.referrer_domain.is_some_and(|d| matches(d, SEARCH));

    if s.search_click_id || (paid && search_source) {
        return Channel::PaidSearch;
    }
    if paid && (social_source || s.social_click_id) {
        return Channel::PaidSocial;
    }
    match medium {
        Some("email" | "e-mail" | "e_mail" | "newsletter") => return Channel::Email,
        Some("affiliate" | "affiliates") => return Channel::Affiliate,
        Some("display" | "banner" | "cpm" | "interstitial") => return Channel::Display,
        Some("social" | "social-network" | "social-media" | "sm" | "social network") => return Channel::OrganicSocial,
        Some("organic") if search_source => return Channel::OrganicSearch,
        _ => {}
    }
    if paid {
        return Channel::PaidSearch;
    }
    if source.is_some_and(|x| x.contains("mail")) {
        return Channel::Email;
    }
    if social_source || s.social_click_id {
        return Channel::OrganicSocial;
    }
    if search_source {
        return Channel::OrganicSearch;
    }
    if s.referrer_domain.is_some() {
        return Channel::Referral;
    }
    if source.is_some() || medium.is_some() {
        return Channel::Other;
    }
    Channel::Direct
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        referrer: Option<&str>,
        source: Option<&str>,
        medium: Option<&str>,
        gclid: bool,
        fbclid: bool,
        expected: Channel,
    ) {
        let s = Signals {
            referrer_domain: referrer,
            utm_source: source,
            utm_medium: medium,
            search_click_id: gclid,
            social_click_id: fbclid,
        };
        assert_eq!(classify(s), expected, "{s:?}");
    }

    #[test]
    fn table() {
        use Channel::*;
        check(None, None, None, false, false, Direct);
        check(Some("www.google.com"), None, None, false, false, OrganicSearch);
        check(Some("google.de"), None, None, false, false, OrganicSearch);
        check(Some("duckduckgo.com"), None, None, false, false, OrganicSearch);
        check(Some("notgoogle.com"), None, None, false, false, Referral);
        check(Some("www.google.com"), None, None, true, false, PaidSearch);
        check(None, Some("google"), Some("cpc"), false, false, PaidSearch);
        check(None, Some("bing"), Some("ppc"), false, false, PaidSearch);
        check(Some("m.facebook.com"), None, None, false, false, OrganicSocial);
        check(Some("t.co"), None, None, false, false, OrganicSocial);
        check(Some("go.t.co"), None, None, false, false, OrganicSocial);
        check(Some("nott.co"), None, None, false, false, Referral);
        check(Some("l.instagram.com"), None, None, false, true, OrganicSocial);
        check(None, Some("facebook"), Some("paid_social"), false, false, PaidSocial);
        check(Some("facebook.com"), None, Some("cpc"), false, true, PaidSocial);
        check(None, Some("newsletter"), Some("email"), false, false, Email);
        check(None, Some("mailchimp"), None, false, false, Email);
        check(None, Some("partner"), Some("affiliate"), false, false, Affiliate);
        check(None, Some("adnet"), Some("banner"), false, false, Display);
        check(Some("news.ycombinator.com"), None, None, false, false, Referral);
        check(None, Some("podcast"), Some("audio"), false, false, Other);
        check(Some("blog.example.org"), Some("blog"), Some("referral"), false, false, Referral);
    }
}
