//! Retention policies for `coffer forget`: which snapshots are kept, and why.
//!
//! The semantics follow restic's `forget` ("Removing snapshots according to a
//! policy"), with the deliberate differences listed at the end.
//!
//! This floor is pure: it never touches storage or a repository and never reads the clock (the
//! current time is the `now` parameter of [`apply`]). It may use only jiff, serde and
//! [`crate::error`]. Its parts: `count` ([`KeepCount`]), `within` ([`KeepWithin`] and its
//! cut-off), `policy` ([`Policy`]), `period` (the bucket a count rule puts a snapshot in),
//! `decide` ([`apply`], [`apply_grouped`]: the decision with its reasons) and `group`
//! ([`GroupBy`] and its keys).
//!
//! # Rules
//!
//! A [`Policy`] holds any combination of keep rules. A snapshot is kept when
//! *any* rule keeps it, and every rule that keeps it is reported as a reason.
//! A policy without any active rule is refused with
//! [`Error::NoKeepRules`](crate::Error::NoKeepRules), so a typo never forgets every snapshot.
//!
//! Snapshots are processed newest first. Equal times are ordered by id,
//! descending (byte-wise string comparison), so results never depend on input
//! order.
//!
//! * **last N**: the N newest snapshots. Reason `last k/N`.
//! * **hourly / daily / weekly / monthly / yearly N**: buckets are the local
//!   civil hour (date + hour), the local calendar day, the ISO 8601 week
//!   (ISO week-numbering year + week number, so 2021-01-03 is in 2020-W53 and
//!   2024-12-30 is in 2025-W01), the calendar month and the calendar year.
//!   Walking newest first, the first snapshot seen in a bucket (= the newest
//!   one in that bucket) is kept, until N buckets have been used. Only buckets
//!   that contain a snapshot count: days without a snapshot do not use up the
//!   count, so `daily 7` means "the newest snapshot of each of the 7 most
//!   recent days that have a snapshot", whenever `forget` is run. Reason
//!   `daily k/N` (the k-th bucket of the N allowed).
//! * **within DURATION**: every snapshot whose time is strictly after
//!   `reference - DURATION`, where `reference` is the time of the newest
//!   snapshot of the group (not the current time), ignoring snapshots dated in
//!   the future (see [`apply`]). Reason `within 30d`.
//! * **tag T** (repeatable): every snapshot that carries any of the given tags
//!   (exact, case-sensitive match). One reason `tag T` per matching tag.
//!
//! Reasons are listed in the order last, hourly, daily, weekly, monthly,
//! yearly, within, tags, e.g. `["last 1/2", "daily 1/7", "weekly 1/4"]`.
//!
//! # Counts
//!
//! [`KeepCount::N`] keeps up to N buckets; `N(0)` switches the rule off (as
//! restic's `0`). [`KeepCount::All`] keeps the newest snapshot of every bucket
//! (restic's `-1`); it parses from `all`, `unlimited` or `-1` and is shown as
//! `all` (reason `daily 12/all`).
//!
//! # Time zones
//!
//! Buckets are computed in the [`TimeZone`](jiff::tz::TimeZone) given to [`apply`], DST-correct:
//! a snapshot is in the local day, hour, week, month and year in which its
//! instant falls in that zone (23:30 UTC on 2025-03-29 is 2025-03-30 00:30 in
//! Europe/Berlin, so it is in Berlin's March 30 but in UTC's March 29).
//! Hour buckets are civil hours: on a fall-back day, 01:30 EDT and 01:30 EST
//! in America/New_York are both in the local 01:00 hour bucket, so
//! `hourly` keeps only the later one. On a spring-forward day the skipped hour
//! simply has no bucket.
//!
//! # Durations (`within`)
//!
//! Written like restic: a sequence of `<number><unit>` with units `y` (years),
//! `m` (months), `d` (days), `h` (hours), e.g. `1y6m2d3h`, plus the Coffer
//! extension `w` (weeks, = 7 days), e.g. `2w`. Surrounding whitespace is
//! ignored; units may appear in any order but at most once each; numbers are
//! plain decimal digits. Rejected: empty input, a unit without a number (`d`),
//! a number without a unit (`30`), unknown units (`30x`, `5M`), negative
//! numbers, repeated units (`1d2d`), a total of zero (`0d`), and values beyond
//! jiff's span limits. [`KeepWithin`] displays in canonical order `y m w d h`,
//! omitting zero parts (`6m1y` displays as `1y6m`; `30d` stays `30d`).
//!
//! The cut-off is computed calendar-aware in the given zone: first the years,
//! months, weeks and days are subtracted from the reference's local civil
//! date-time (a day-of-month that does not exist is clamped to the end of the
//! month: 2025-03-31 minus `1m` is 2025-02-28; a local time that falls into a
//! DST gap or fold is resolved with jiff's "compatible" rule), then the hours
//! are subtracted as exact elapsed hours. So across a spring-forward day `1d`
//! is 23 real hours while `24h` is 24. A cut-off before the earliest
//! representable instant means every snapshot is within.
//!
//! # Grouping
//!
//! The policy is applied to each group independently ([`apply_grouped`]).
//! [`GroupBy`] parses the `--group-by` spec: a comma-separated list of `host`,
//! `paths`, `tags` and `label:NAME` (any order, surrounding whitespace
//! ignored); the empty string means no grouping; the default is `host,paths`.
//! [`GroupBy::key`] renders a stable, readable key such as
//! `host=web1 paths=/a,/b tags=db label:app=shop`: paths and tags are sorted
//! and de-duplicated (treated as sets), labels are sorted by name. Within
//! values, `%`, `,`, `=`, `"`, whitespace and control characters are
//! percent-encoded (`%2C`, `%20`, ...), an empty value is written `""`, and a
//! missing label is written `label:NAME` with no `=`, so two different groups
//! can never produce the same key. Without grouping the key is the empty
//! string.
//!
//! # Differences from restic
//!
//! * **Oldest snapshot**: restic (since 0.17) additionally keeps the oldest
//!   snapshot of a group when a count rule still has unused count left
//!   (reason `oldest daily snapshot`). Coffer does not: only the newest
//!   snapshot of each of the N most recent buckets is kept.
//! * **Tags**: restic's `--keep-tag a,b` keeps snapshots carrying *all* of
//!   `a` and `b`. Coffer's tag list is a plain list of single tags, any of
//!   which keeps a snapshot. Empty (or blank) tags are rejected with
//!   [`Error::InvalidKeepTag`](crate::Error::InvalidKeepTag) instead of being matched.
//! * **Ties**: restic keeps snapshots with equal times in input order; Coffer
//!   orders them by id, descending.
//! * **Time zone**: restic buckets each snapshot in the UTC offset recorded in
//!   the snapshot; Coffer uses one caller-given IANA zone for all snapshots.
//! * **Duplicate buckets**: restic counts a new bucket whenever the bucket
//!   differs from the previous snapshot's; Coffer remembers every bucket used.
//!   This only matters in zones whose clocks go back across an hour or day
//!   boundary, where Coffer still keeps at most one snapshot per bucket.
//! * **Month arithmetic**: restic (Go's `AddDate`) normalises 2025-03-31 minus
//!   one month to 2025-03-03; Coffer clamps to 2025-02-28 (keeps a few more).
//! * **Durations**: the `w` unit is a Coffer extension; restic accepts empty
//!   input, negative numbers and repeated units (the last wins), Coffer
//!   rejects them.
//! * **Counters**: restic reports bare reasons (`daily snapshot`); Coffer adds
//!   the bucket number and limit (`daily 3/7`) and writes `tag db` rather than
//!   `has tags [db]`.
//! * **Empty policy**: restic keeps everything with reason `policy is empty`;
//!   Coffer returns [`Error::NoKeepRules`](crate::Error::NoKeepRules).

mod count;
mod decide;
mod group;
mod period;
mod policy;
#[cfg(test)]
mod testing;
mod within;

pub use count::KeepCount;
pub use decide::{apply, apply_grouped, Candidate, Decision, GroupDecisions};
pub use group::GroupBy;
pub use policy::Policy;
pub use within::KeepWithin;

#[cfg(test)]
mod tests {
    use crate::error::Error;

    /// The messages are the ones `RetentionError` had before it was folded into [`Error`]
    /// (users and scripts see them; the CLI's exit codes for them did not change either).
    #[test]
    fn retention_error_messages_are_unchanged() {
        let s = |v: &str| v.to_string();
        let cases = [
            (
                Error::NoKeepRules,
                "no keep rule given (use at least one of keep-last, keep-hourly, keep-daily, \
                 keep-weekly, keep-monthly, keep-yearly, keep-within, keep-tag); refusing to \
                 forget every snapshot",
            ),
            (
                Error::InvalidKeepCount {
                    input: s("x"),
                    reason: s("why"),
                },
                "invalid keep count \"x\": why",
            ),
            (
                Error::InvalidKeepWithin {
                    input: s("3q"),
                    reason: s("why"),
                },
                "invalid keep-within duration \"3q\": why",
            ),
            (
                Error::InvalidGroupBy {
                    input: s("host,x"),
                    item: s("x"),
                    reason: s("why"),
                },
                "invalid group-by item \"x\" in \"host,x\": why",
            ),
            (
                Error::InvalidKeepTag { tag: s(" ") },
                "invalid keep-tag \" \": a tag must not be empty",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn errors_are_std_errors() {
        let e: Box<dyn std::error::Error> = Box::new(Error::InvalidKeepTag { tag: String::new() });
        assert_eq!(
            e.to_string(),
            "invalid keep-tag \"\": a tag must not be empty"
        );
    }
}
