//! Client geography and the bot score from Cloudflare's `request.cf`, read through a lookup.
//!
//! The lookup takes a dotted path (`botManagement.score`) and returns the raw value, so the
//! logic runs natively in tests and the wasm glue only walks a JS object. Every field may be
//! missing (local development, a request without `cf`): a missing or malformed field is `None`,
//! never a panic.

use protocol::forward::Geo;

/// Longest geo string kept, in bytes; longer values are cut at a character boundary.
pub const MAX_GEO_STRING_LEN: usize = 256;

/// One value of `request.cf`, as far as the edge cares.
#[derive(Debug, Clone, PartialEq)]
pub enum CfValue {
    /// A JS string.
    Text(String),
    /// A JS number.
    Number(f64),
}

/// Builds the [`Geo`] of a request from its `cf` fields.
pub fn geo_from_cf(lookup: impl Fn(&str) -> Option<CfValue>) -> Geo {
    let text = |key: &str| match lookup(key) {
        Some(CfValue::Text(s)) => {
            let s = truncate(s.trim(), MAX_GEO_STRING_LEN);
            (!s.is_empty()).then(|| s.to_owned())
        }
        _ => None,
    };
    Geo {
        country: text("country"),
        region: text("region"),
        region_code: text("regionCode"),
        city: text("city"),
        postal_code: text("postalCode"),
        continent: text("continent"),
        timezone: text("timezone"),
        latitude: number(lookup("latitude")).filter(|v| (-90.0..=90.0).contains(v)),
        longitude: number(lookup("longitude")).filter(|v| (-180.0..=180.0).contains(v)),
        asn: number(lookup("asn")).filter(|v| v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(v)).map(
            // In range and integral, checked just above.
            |v| v as u32,
        ),
        as_org: text("asOrganization"),
        colo: text("colo"),
    }
}

/// Cloudflare Bot Management score (1 = bot ... 99 = human), when the zone has it.
pub fn bot_score(lookup: impl Fn(&str) -> Option<CfValue>) -> Option<f64> {
    number(lookup("botManagement.score"))
}

/// A finite number from a JS number or a numeric string (`cf.latitude` is a string).
fn number(v: Option<CfValue>) -> Option<f64> {
    match v? {
        CfValue::Number(n) => Some(n),
        CfValue::Text(s) => s.trim().parse::<f64>().ok(),
    }
    .filter(|n| n.is_finite())
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup_in<'a>(fields: &'a [(&'a str, CfValue)]) -> impl Fn(&str) -> Option<CfValue> + 'a {
        move |k| fields.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())
    }

    fn t(s: &str) -> CfValue {
        CfValue::Text(s.to_owned())
    }

    #[test]
    fn full_cf_object() {
        let cf = [
            ("country", t("DE")),
            ("region", t("Berlin")),
            ("regionCode", t("BE")),
            ("city", t("Berlin")),
            ("postalCode", t("10115")),
            ("continent", t("EU")),
            ("timezone", t("Europe/Berlin")),
            ("latitude", t("52.52000")),
            ("longitude", t("13.40500")),
            ("asn", CfValue::Number(3320.0)),
            ("asOrganization", t("Deutsche Telekom AG")),
            ("colo", t("FRA")),
        ];
        let geo = geo_from_cf(lookup_in(&cf));
        assert_eq!(
            geo,
            Geo {
                country: Some("DE".into()),
                region: Some("Berlin".into()),
                region_code: Some("BE".into()),
                city: Some("Berlin".into()),
                postal_code: Some("10115".into()),
                continent: Some("EU".into()),
                timezone: Some("Europe/Berlin".into()),
                latitude: Some(52.52),
                longitude: Some(13.405),
                asn: Some(3320),
                as_org: Some("Deutsche Telekom AG".into()),
                colo: Some("FRA".into()),
            }
        );
    }

    #[test]
    fn missing_and_malformed_fields_are_none() {
        assert_eq!(geo_from_cf(|_| None), Geo::default());
        let cf = [
            ("country", CfValue::Number(49.0)),
            ("city", t("  ")),
            ("latitude", t("north")),
            ("longitude", t("200")),
            ("asn", CfValue::Number(-1.0)),
            ("colo", t("FRA")),
        ];
        let geo = geo_from_cf(lookup_in(&cf));
        assert_eq!(geo, Geo { colo: Some("FRA".into()), ..Geo::default() });
        let cf = [("asn", t("13335")), ("latitude", CfValue::Number(f64::NAN)), ("longitude", CfValue::Number(-0.5))];
        let geo = geo_from_cf(lookup_in(&cf));
        assert_eq!((geo.asn, geo.latitude, geo.longitude), (Some(13335), None, Some(-0.5)));
        let cf = [("asn", CfValue::Number(1.5))];
        assert_eq!(geo_from_cf(lookup_in(&cf)).asn, None);
    }

    #[test]
    fn bot_scores() {
        assert_eq!(bot_score(|_| None), None);
        assert_eq!(bot_score(lookup_in(&[("botManagement.score", CfValue::Number(12.0))])), Some(12.0));
        assert_eq!(bot_score(lookup_in(&[("botManagement.score", t("x"))])), None);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate(&"ü".repeat(300), MAX_GEO_STRING_LEN).len(), MAX_GEO_STRING_LEN);
    }
}
