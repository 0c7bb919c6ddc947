//! Millisecond time arithmetic, RFC 3339 formatting and the daily activity
//! curve.
//!
//! Human activity (registrations, logins, applications) follows a day/night
//! curve. Rather than rejection-sampling every timestamp, the generator works
//! in *activity time*: one unit per day, where each hour takes a share of the
//! unit proportional to how busy it is. Uniform draws in activity time map to
//! realistic wall-clock times through a monotone piecewise-linear warp, and
//! monotonicity keeps sorted draws sorted, which the streaming background
//! process relies on.

use anyhow::Context;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(crate) const SEC_MS: i64 = 1_000;
pub(crate) const MIN_MS: i64 = 60 * SEC_MS;
pub(crate) const HOUR_MS: i64 = 60 * MIN_MS;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// Parses an RFC 3339 timestamp to milliseconds since the Unix epoch.
pub(crate) fn parse_rfc3339_ms(text: &str) -> anyhow::Result<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).with_context(|| format!("`{text}` is not an RFC 3339 timestamp"))?;
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).context("timestamp out of range")
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_2(buf: &mut String, v: u32) {
    buf.push((b'0' + (v / 10) as u8) as char);
    buf.push((b'0' + (v % 10) as u8) as char);
}

/// Formats event times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, caching the date part
/// (consecutive events almost always share a day).
#[derive(Debug, Default)]
pub(crate) struct TimeFmt {
    day: Option<i64>,
    prefix: String,
}

impl TimeFmt {
    pub(crate) fn push(&mut self, buf: &mut String, ms: i64) {
        let day = ms.div_euclid(DAY_MS);
        if self.day != Some(day) {
            let (y, m, d) = civil_from_days(day);
            self.prefix.clear();
            let y = y.clamp(0, 9999) as u32;
            push_2(&mut self.prefix, y / 100);
            push_2(&mut self.prefix, y % 100);
            self.prefix.push('-');
            push_2(&mut self.prefix, m);
            self.prefix.push('-');
            push_2(&mut self.prefix, d);
            self.prefix.push('T');
            self.day = Some(day);
        }
        buf.push_str(&self.prefix);
        let r = ms.rem_euclid(DAY_MS) as u32;
        push_2(buf, r / 3_600_000);
        buf.push(':');
        push_2(buf, r / 60_000 % 60);
        buf.push(':');
        push_2(buf, r / 1000 % 60);
        buf.push('.');
        let milli = r % 1000;
        buf.push((b'0' + (milli / 100) as u8) as char);
        push_2(buf, milli % 100);
        buf.push('Z');
    }

    pub(crate) fn format(ms: i64) -> String {
        let mut s = String::with_capacity(24);
        TimeFmt::default().push(&mut s, ms);
        s
    }
}

/// Relative activity per UTC hour of the day (quiet nights, busy evenings).
const HOURLY: [f64; 24] = [
    2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 7.0, 9.0, 9.0, 8.0, 8.0, 9.0, 8.0, 8.0, 8.0, 8.0, 9.0, 10.0, 11.0, 12.0, 11.0,
    8.0, 4.0,
];

/// The activity-time warp (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Diurnal {
    /// Share of the day's activity in each hour; sums to 1.
    share: [f64; 24],
    /// Activity before each hour; cdf[24] == 1.
    cdf: [f64; 25],
}

impl Diurnal {
    pub(crate) fn new() -> Self {
        let total: f64 = HOURLY.iter().sum();
        let mut share = [0.0; 24];
        let mut cdf = [0.0; 25];
        for h in 0..24 {
            share[h] = HOURLY[h] / total;
            cdf[h + 1] = cdf[h] + share[h];
        }
        cdf[24] = 1.0;
        Diurnal { share, cdf }
    }

    /// Wall-clock milliseconds to activity time.
    pub(crate) fn to_act(&self, ms: i64) -> f64 {
        let day = ms.div_euclid(DAY_MS);
        let r = ms.rem_euclid(DAY_MS);
        let h = (r / HOUR_MS) as usize;
        let frac = (r % HOUR_MS) as f64 / HOUR_MS as f64;
        day as f64 + self.cdf[h] + self.share[h] * frac
    }

    /// Activity time to wall-clock milliseconds (monotone non-decreasing).
    pub(crate) fn to_ms(&self, act: f64) -> i64 {
        let day = act.floor();
        let f = act - day;
        let mut h = 23;
        for i in 0..24 {
            if f < self.cdf[i + 1] {
                h = i;
                break;
            }
        }
        let within = ((f - self.cdf[h]) / self.share[h]).clamp(0.0, 1.0);
        let in_hour = ((within * HOUR_MS as f64) as i64).min(HOUR_MS - 1);
        day as i64 * DAY_MS + h as i64 * HOUR_MS + in_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_millis_utc() {
        let ms = parse_rfc3339_ms("2026-10-01T00:00:00Z").unwrap();
        assert_eq!(TimeFmt::format(ms), "2026-10-01T00:00:00.000Z");
        assert_eq!(TimeFmt::format(ms + 86_399_999), "2026-10-01T23:59:59.999Z");
        let leap = parse_rfc3339_ms("2028-02-29T13:14:15.016+00:00").unwrap();
        assert_eq!(TimeFmt::format(leap), "2028-02-29T13:14:15.016Z");
        assert_eq!(TimeFmt::format(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn warp_is_monotone_and_round_trips() {
        let d = Diurnal::new();
        let t0 = parse_rfc3339_ms("2026-10-01T00:00:00Z").unwrap();
        let mut last = i64::MIN;
        for i in 0..20_000 {
            let ms = t0 + i * 7_919_993;
            let back = d.to_ms(d.to_act(ms));
            assert!((back - ms).abs() <= 1, "{ms} -> {back}");
            assert!(back >= last);
            last = back;
        }
    }
}
