//! Geo for direct ingest from a MaxMind-format database (GeoLite2, DB-IP, `@ip-location-db`).
//!
//! Two schemas are understood: MaxMind's GeoIP2/GeoLite2 (`country.iso_code`, ...; country-only
//! and city databases both decode as `geoip2::City`, missing fields are absent) and the flat one
//! of the `@ip-location-db` packages (`country_code`, `state1`, `city`, ...). Lookups are in
//! memory; the file is read once at start.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, Reader};
use protocol::forward::Geo;

/// The flat record of the `@ip-location-db` databases.
#[derive(Debug, serde::Deserialize)]
struct Flat<'a> {
    country_code: Option<&'a str>,
    state1: Option<&'a str>,
    city: Option<&'a str>,
    postcode: Option<&'a str>,
    timezone: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open geoip database {path}: {source}")]
pub struct GeoIpError {
    path: String,
    #[source]
    source: maxminddb::MaxMindDbError,
}

/// An opened database.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").field("type", &self.reader.metadata.database_type).finish()
    }
}

impl GeoIp {
    /// Reads the database file.
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        Reader::open_readfile(path)
            .map(|reader| GeoIp { reader })
            .map_err(|source| GeoIpError { path: path.display().to_string(), source })
    }

    /// Geo of an address; empty when unknown (private ranges, gaps in the data, bad records).
    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let Ok(result) = self.reader.lookup(ip) else { return Geo::default() };
        if let Ok(Some(flat)) = result.decode::<Flat<'_>>() {
            if flat.country_code.is_some() {
                return Geo {
                    country: flat.country_code.map(str::to_owned),
                    region: flat.state1.map(str::to_owned),
                    city: flat.city.map(str::to_owned),
                    postal_code: flat.postcode.map(str::to_owned),
                    timezone: flat.timezone.map(str::to_owned),
                    latitude: flat.latitude,
                    longitude: flat.longitude,
                    ..Geo::default()
                };
            }
        }
        let Ok(Some(city)) = result.decode::<geoip2::City>() else { return Geo::default() };
        let sub = city.subdivisions.first();
        Geo {
            country: city.country.iso_code.map(str::to_owned),
            region: sub.and_then(|s| s.names.english).map(str::to_owned),
            region_code: sub.and_then(|s| s.iso_code).map(str::to_owned),
            city: city.city.names.english.map(str::to_owned),
            postal_code: city.postal.code.map(str::to_owned),
            continent: city.continent.code.map(str::to_owned),
            timezone: city.location.time_zone.map(str::to_owned),
            latitude: city.location.latitude,
            longitude: city.location.longitude,
            ..Geo::default()
        }
    }
}
