//! The count rules and the period (bucket) each one puts a snapshot in: the local civil hour,
//! day, ISO 8601 week, month or year of the snapshot's instant in the chosen zone.
//!
//! Pure; may use jiff only.

use jiff::civil::DateTime;

/// A count rule. Its order here is the order its reasons are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A bucket identity; unused fields are zero.
pub(super) type Bucket = (i16, i8, i8, i8);

impl Rule {
    pub(super) fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The bucket of a local civil time; `None` for keep-last, where every
    /// snapshot is its own bucket.
    pub(super) fn bucket(self, t: DateTime) -> Option<Bucket> {
        Some(match self {
            Rule::Last => return None,
            Rule::Hourly => (t.year(), t.month(), t.day(), t.hour()),
            Rule::Daily => (t.year(), t.month(), t.day(), 0),
            Rule::Weekly => {
                let w = t.date().iso_week_date();
                (w.year(), w.week(), 0, 0)
            }
            Rule::Monthly => (t.year(), t.month(), 0, 0),
            Rule::Yearly => (t.year(), 0, 0, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::testing::*;
    use crate::retention::{Candidate, KeepCount, Policy};
    use jiff::tz::TimeZone;

    /// (name, policy, zone, snapshots, expected kept ids newest first)
    type ZoneCase<'a> = (
        &'a str,
        &'a Policy,
        &'a TimeZone,
        &'a [Candidate],
        Vec<&'a str>,
    );
    /// (name, policy, zone, snapshots, expected kept ids newest first)
    type PolicyCase<'a> = (&'a str, Policy, &'a TimeZone, &'a [Candidate], Vec<&'a str>);

    #[test]
    fn buckets_of_one_local_time() {
        // A Sunday: ISO week 2021-W01 starts the next day, so it is in 2020-W53.
        let t: DateTime = "2021-01-03T17:45:00".parse().unwrap();
        let cases = [
            (Rule::Last, None),
            (Rule::Hourly, Some((2021, 1, 3, 17))),
            (Rule::Daily, Some((2021, 1, 3, 0))),
            (Rule::Weekly, Some((2020, 53, 0, 0))),
            (Rule::Monthly, Some((2021, 1, 0, 0))),
            (Rule::Yearly, Some((2021, 0, 0, 0))),
        ];
        for (rule, want) in cases {
            assert_eq!(rule.bucket(t), want, "{}", rule.name());
        }
    }

    #[test]
    fn iso_weeks_at_year_boundaries() {
        let utc = TimeZone::UTC;
        // Calendar (year, week) would split 2020-12-31 / 2021-01-03 and merge
        // nothing across 2024-12-30 / 2025-01-05; ISO weeks do the opposite.
        let cands = [
            snap("2020-12-31 thu W53", "2020-12-31T12:00:00Z"),
            snap("2021-01-03 sun 2020-W53", "2021-01-03T12:00:00Z"),
            snap("2021-01-04 mon 2021-W01", "2021-01-04T12:00:00Z"),
            snap("2024-12-29 sun 2024-W52", "2024-12-29T12:00:00Z"),
            snap("2024-12-30 mon 2025-W01", "2024-12-30T12:00:00Z"),
            snap("2025-01-05 sun 2025-W01", "2025-01-05T12:00:00Z"),
        ];
        let cases: Vec<(KeepCount, Vec<&str>)> = vec![
            (KeepCount::N(1), vec!["2025-01-05 sun 2025-W01"]),
            (
                KeepCount::N(2),
                vec!["2025-01-05 sun 2025-W01", "2024-12-29 sun 2024-W52"],
            ),
            (
                KeepCount::All,
                vec![
                    "2025-01-05 sun 2025-W01",
                    "2024-12-29 sun 2024-W52",
                    "2021-01-04 mon 2021-W01",
                    "2021-01-03 sun 2020-W53",
                ],
            ),
        ];
        for (n, want) in cases {
            let p = Policy {
                weekly: Some(n),
                ..Policy::default()
            };
            assert_eq!(kept(&p, &utc, &cands), ids(&want), "weekly {n}");
        }
        // Only the 2020-W53 pair: the newer one wins.
        let p = Policy {
            weekly: Some(KeepCount::All),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &utc, &[cands[0].clone(), cands[1].clone()]),
            ids(&["2021-01-03 sun 2020-W53"])
        );
        // Only the 2025-W01 pair.
        assert_eq!(
            kept(&p, &utc, &[cands[4].clone(), cands[5].clone()]),
            ids(&["2025-01-05 sun 2025-W01"])
        );
    }

    #[test]
    fn dst_berlin_days_differ_from_utc() {
        let utc = TimeZone::UTC;
        let daily = Policy {
            daily: Some(KeepCount::All),
            ..Policy::default()
        };
        let hourly = Policy {
            hourly: Some(KeepCount::All),
            ..Policy::default()
        };
        let berlin = zone("Europe/Berlin");
        // Spring forward 2025-03-30 02:00 CET -> 03:00 CEST.
        let spring = [
            snap("A 03-29 13:00 CET", "2025-03-29T12:00:00Z"),
            snap("B 03-30 00:30 CET", "2025-03-29T23:30:00Z"),
            snap("D 03-30 01:30 CET", "2025-03-30T00:30:00Z"),
            snap("E 03-30 03:30 CEST", "2025-03-30T01:30:00Z"),
            snap("C 03-30 12:00 CEST", "2025-03-30T10:00:00Z"),
        ];
        // Fall back 2025-10-26 03:00 CEST -> 02:00 CET.
        let fall = [
            snap("E 10-25 14:00 CEST", "2025-10-25T12:00:00Z"),
            snap("F 10-26 01:30 CEST", "2025-10-25T23:30:00Z"),
            snap("G 10-26 02:30 CEST", "2025-10-26T00:30:00Z"),
            snap("H 10-26 02:30 CET", "2025-10-26T01:30:00Z"),
        ];
        let cases: Vec<ZoneCase> = vec![
            (
                "spring daily Berlin",
                &daily,
                &berlin,
                &spring,
                vec!["C 03-30 12:00 CEST", "A 03-29 13:00 CET"],
            ),
            (
                "spring daily UTC",
                &daily,
                &utc,
                &spring,
                vec!["C 03-30 12:00 CEST", "B 03-30 00:30 CET"],
            ),
            (
                "spring hourly Berlin",
                &hourly,
                &berlin,
                &spring,
                vec![
                    "C 03-30 12:00 CEST",
                    "E 03-30 03:30 CEST",
                    "D 03-30 01:30 CET",
                    "B 03-30 00:30 CET",
                    "A 03-29 13:00 CET",
                ],
            ),
            (
                "fall daily Berlin",
                &daily,
                &berlin,
                &fall,
                vec!["H 10-26 02:30 CET", "E 10-25 14:00 CEST"],
            ),
            (
                "fall daily UTC",
                &daily,
                &utc,
                &fall,
                vec!["H 10-26 02:30 CET", "F 10-26 01:30 CEST"],
            ),
            (
                // G and H are both in Berlin's civil 02:00 hour.
                "fall hourly Berlin",
                &hourly,
                &berlin,
                &fall,
                vec![
                    "H 10-26 02:30 CET",
                    "F 10-26 01:30 CEST",
                    "E 10-25 14:00 CEST",
                ],
            ),
            (
                "fall hourly UTC",
                &hourly,
                &utc,
                &fall,
                vec![
                    "H 10-26 02:30 CET",
                    "G 10-26 02:30 CEST",
                    "F 10-26 01:30 CEST",
                    "E 10-25 14:00 CEST",
                ],
            ),
        ];
        for (name, p, tz, cands, want) in cases {
            assert_eq!(kept(p, tz, cands), ids(&want), "{name}");
        }
    }

    #[test]
    fn dst_new_york_fall_back_same_hour_bucket() {
        let utc = TimeZone::UTC;
        let ny = zone("America/New_York");
        // 2025-11-02 02:00 EDT -> 01:00 EST.
        let cands = [
            snap("11-01 23:30 EDT", "2025-11-02T03:30:00Z"),
            snap("00:30 EDT", "2025-11-02T04:30:00Z"),
            snap("01:30 EDT", "2025-11-02T05:30:00Z"),
            snap("01:30 EST", "2025-11-02T06:30:00Z"),
            snap("02:30 EST", "2025-11-02T07:30:00Z"),
        ];
        let hourly = Policy {
            hourly: Some(KeepCount::All),
            ..Policy::default()
        };
        let daily = Policy {
            daily: Some(KeepCount::All),
            ..Policy::default()
        };
        assert_eq!(
            kept(&hourly, &ny, &cands),
            ids(&["02:30 EST", "01:30 EST", "00:30 EDT", "11-01 23:30 EDT"])
        );
        assert_eq!(
            kept(&daily, &ny, &cands),
            ids(&["02:30 EST", "11-01 23:30 EDT"])
        );
        assert_eq!(kept(&daily, &utc, &cands), ids(&["02:30 EST"]));
        assert_eq!(
            kept(&hourly, &utc, &cands),
            ids(&[
                "02:30 EST",
                "01:30 EST",
                "01:30 EDT",
                "00:30 EDT",
                "11-01 23:30 EDT"
            ])
        );
    }

    #[test]
    fn hourly_monthly_yearly() {
        let utc = TimeZone::UTC;
        let hours = [
            snap("10:05", "2025-05-05T10:05:00Z"),
            snap("10:55", "2025-05-05T10:55:00Z"),
            snap("11:00", "2025-05-05T11:00:00Z"),
            snap("13:00", "2025-05-05T13:00:00Z"),
            snap("13:59", "2025-05-05T13:59:59Z"),
        ];
        let months = [
            snap("2024-11-15", "2024-11-15T12:00:00Z"),
            snap("2024-12-01", "2024-12-01T12:00:00Z"),
            snap("2024-12-31 23:00Z", "2024-12-31T23:00:00Z"),
            snap("2025-01-31", "2025-01-31T12:00:00Z"),
            snap("2025-02-01 00:30Z", "2025-02-01T00:30:00Z"),
        ];
        let years = [
            snap("2023-06-01", "2023-06-01T12:00:00Z"),
            snap("2023-12-31", "2023-12-31T12:00:00Z"),
            snap("2024-03-01", "2024-03-01T12:00:00Z"),
            snap("2025-01-01 00:00Z", "2025-01-01T00:00:00Z"),
            snap("2025-07-01", "2025-07-01T12:00:00Z"),
        ];
        let berlin = zone("Europe/Berlin");
        let new_york = zone("America/New_York");
        let hourly = |n| Policy {
            hourly: Some(n),
            ..Policy::default()
        };
        let monthly = |n| Policy {
            monthly: Some(n),
            ..Policy::default()
        };
        let yearly = |n| Policy {
            yearly: Some(n),
            ..Policy::default()
        };
        use KeepCount::{All, N};
        let cases: Vec<PolicyCase> = vec![
            (
                "hourly 2",
                hourly(N(2)),
                &utc,
                &hours,
                vec!["13:59", "11:00"],
            ),
            (
                "hourly 3",
                hourly(N(3)),
                &utc,
                &hours,
                vec!["13:59", "11:00", "10:55"],
            ),
            (
                "monthly 3 UTC",
                monthly(N(3)),
                &utc,
                &months,
                vec!["2025-02-01 00:30Z", "2025-01-31", "2024-12-31 23:00Z"],
            ),
            (
                // 2024-12-31 23:00Z is 2025-01-01 00:00 in Berlin: January.
                "monthly 3 Berlin",
                monthly(N(3)),
                &berlin,
                &months,
                vec!["2025-02-01 00:30Z", "2025-01-31", "2024-12-01"],
            ),
            (
                "monthly all UTC",
                monthly(All),
                &utc,
                &months,
                vec![
                    "2025-02-01 00:30Z",
                    "2025-01-31",
                    "2024-12-31 23:00Z",
                    "2024-11-15",
                ],
            ),
            (
                "yearly 2",
                yearly(N(2)),
                &utc,
                &years,
                vec!["2025-07-01", "2024-03-01"],
            ),
            (
                "yearly all",
                yearly(All),
                &utc,
                &years,
                vec!["2025-07-01", "2024-03-01", "2023-12-31"],
            ),
            (
                // 2025-01-01 00:00Z is still 2024-12-31 in New York.
                "yearly all New York",
                yearly(All),
                &new_york,
                &years,
                vec!["2025-07-01", "2025-01-01 00:00Z", "2023-12-31"],
            ),
        ];
        for (name, p, tz, cands, want) in cases {
            assert_eq!(kept(&p, tz, cands), ids(&want), "{name}");
        }
    }
}
