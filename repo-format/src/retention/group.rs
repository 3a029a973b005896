//! Grouping for `forget --group-by`: which snapshot properties form a group, and the stable,
//! unambiguous key that names a group.
//!
//! Pure; may use [`crate::error`] only.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Which snapshot properties form a `forget` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the (sorted, de-duplicated) set of backed-up paths.
    pub paths: bool,
    /// Group by the (sorted, de-duplicated) set of tags.
    pub tags: bool,
    /// Group by the values of these labels (sorted by name in the key).
    pub labels: Vec<String>,
}

impl Default for GroupBy {
    /// `host,paths`, as restic.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
            labels: Vec::new(),
        }
    }
}

impl GroupBy {
    /// No grouping: every snapshot is in one group (key `""`).
    pub fn none() -> Self {
        GroupBy {
            host: false,
            paths: false,
            tags: false,
            labels: Vec::new(),
        }
    }

    /// True when nothing is grouped by.
    pub fn is_none(&self) -> bool {
        !self.host && !self.paths && !self.tags && self.labels.is_empty()
    }

    /// The group key of a snapshot, e.g. `host=web1 paths=/a,/b`.
    ///
    /// Stable (independent of path, tag and label order) and unambiguous:
    /// see the module docs for the encoding.
    pub fn key(
        &self,
        host: &str,
        paths: &[String],
        tags: &[String],
        labels: &BTreeMap<String, String>,
    ) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.host {
            parts.push(format!("host={}", encode(host)));
        }
        if self.paths {
            parts.push(format!("paths={}", encode_set(paths)));
        }
        if self.tags {
            parts.push(format!("tags={}", encode_set(tags)));
        }
        let mut names: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            match labels.get(name) {
                Some(value) => parts.push(format!("label:{}={}", encode(name), encode(value))),
                None => parts.push(format!("label:{}", encode(name))),
            }
        }
        parts.join(" ")
    }
}

/// Percent-encodes the characters that structure a key; `""` for empty.
fn encode(s: &str) -> String {
    if s.is_empty() {
        return "\"\"".to_string();
    }
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | ',' | '=' | '"') || ch.is_whitespace() || ch.is_control() {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn encode_set(items: &[String]) -> String {
    let mut sorted: Vec<&str> = items.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.into_iter().map(encode).collect::<Vec<_>>().join(",")
}

impl FromStr for GroupBy {
    type Err = Error;

    /// Parses `host,paths`, `host,tags`, `label:app`, ... ; `""` is no
    /// grouping.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut g = GroupBy::none();
        if s.trim().is_empty() {
            return Ok(g);
        }
        for raw in s.split(',') {
            let item = raw.trim();
            let err = |reason: &str| Error::InvalidGroupBy {
                input: s.to_string(),
                item: item.to_string(),
                reason: reason.to_string(),
            };
            match item {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                "" => return Err(err("empty item")),
                _ => match item.strip_prefix("label:") {
                    Some(name) if !name.trim().is_empty() => {
                        g.labels.push(name.trim().to_string());
                    }
                    Some(_) => return Err(err("missing label name after \"label:\"")),
                    None => {
                        return Err(err("expected host, paths, tags or label:NAME"));
                    }
                },
            }
        }
        g.labels.sort();
        g.labels.dedup();
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    /// The spec form, e.g. `host,paths,label:app`; `""` for no grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        if self.host {
            items.push("host".to_string());
        }
        if self.paths {
            items.push("paths".to_string());
        }
        if self.tags {
            items.push("tags".to_string());
        }
        items.extend(self.labels.iter().map(|l| format!("label:{l}")));
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::testing::*;

    /// (group-by, host, paths, tags, labels, expected key)
    type KeyCase<'a> = (
        GroupBy,
        &'a str,
        Vec<&'a str>,
        Vec<&'a str>,
        &'a BTreeMap<String, String>,
        &'a str,
    );

    #[test]
    fn group_by_parse() {
        let g = |host, paths, tags, labels: &[&str]| GroupBy {
            host,
            paths,
            tags,
            labels: strs(labels),
        };
        let cases: Vec<(&str, GroupBy, &str)> = vec![
            ("host,paths", g(true, true, false, &[]), "host,paths"),
            ("paths,host", g(true, true, false, &[]), "host,paths"),
            (" host , paths ", g(true, true, false, &[]), "host,paths"),
            ("host,tags", g(true, false, true, &[]), "host,tags"),
            ("label:app", g(false, false, false, &["app"]), "label:app"),
            (
                "label:b,host,label:a,label:b",
                g(true, false, false, &["a", "b"]),
                "host,label:a,label:b",
            ),
            ("", GroupBy::none(), ""),
            ("  ", GroupBy::none(), ""),
        ];
        for (input, want, shown) in cases {
            let got: GroupBy = input.parse().unwrap();
            assert_eq!(got, want, "{input:?}");
            assert_eq!(got.to_string(), shown, "{input:?}");
            assert_eq!(shown.parse::<GroupBy>().unwrap(), got, "{input:?}");
        }
        assert_eq!(GroupBy::default(), "host,paths".parse().unwrap());
        assert!(GroupBy::none().is_none());
        assert!(!GroupBy::default().is_none());

        let errors: Vec<(&str, &str)> = vec![
            ("host,bogus", "bogus"),
            ("Host", "Host"),
            ("host,,paths", ""),
            ("host,", ""),
            ("label:", "label:"),
            ("label: ", "label:"),
            ("labels:app", "labels:app"),
        ];
        for (input, item) in errors {
            let e = input.parse::<GroupBy>().unwrap_err();
            match &e {
                Error::InvalidGroupBy {
                    input: i, item: it, ..
                } => {
                    assert_eq!(i, input);
                    assert_eq!(it, item, "{input:?}");
                }
                other => panic!("{input:?}: unexpected {other:?}"),
            }
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid group-by item {item:?} in {input:?}")),
                "{e}"
            );
        }
    }

    #[test]
    fn group_key_is_stable_and_unambiguous() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "shop".to_string()),
            ("env".to_string(), "".to_string()),
        ]
        .into_iter()
        .collect();
        let none = BTreeMap::new();
        let all: GroupBy = "tags,label:zone,label:env,label:app,host,paths"
            .parse()
            .unwrap();
        let cases: Vec<KeyCase> = vec![
            (
                GroupBy::default(),
                "web1",
                vec!["/b", "/a"],
                vec!["x"],
                &none,
                "host=web1 paths=/a,/b",
            ),
            (
                GroupBy::default(),
                "web1",
                vec!["/a", "/b", "/a"],
                vec![],
                &none,
                "host=web1 paths=/a,/b",
            ),
            (
                "host,tags".parse().unwrap(),
                "web1",
                vec!["/a"],
                vec!["z", "a"],
                &none,
                "host=web1 tags=a,z",
            ),
            (GroupBy::none(), "web1", vec!["/a"], vec!["t"], &labels, ""),
            (
                all,
                "web 1",
                vec!["/a,/b", "/my docs"],
                vec![],
                &labels,
                "host=web%201 paths=/a%2C/b,/my%20docs tags= label:app=shop label:env=\"\" label:zone",
            ),
            (
                GroupBy::default(),
                "",
                vec![""],
                vec![],
                &none,
                "host=\"\" paths=\"\"",
            ),
            (
                "paths".parse().unwrap(),
                "h",
                vec!["100%=\"x\""],
                vec![],
                &none,
                "paths=100%25%3D%22x%22",
            ),
        ];
        for (g, host, paths, tags, labels, want) in cases {
            let key = g.key(host, &strs(&paths), &strs(&tags), labels);
            assert_eq!(key, want, "{g}");
        }
        // Distinct path sets never collide.
        let g = GroupBy::default();
        let one = g.key("h", &strs(&["/a,/b"]), &[], &none);
        let two = g.key("h", &strs(&["/a", "/b"]), &[], &none);
        let empty = g.key("h", &[], &[], &none);
        let empty_elem = g.key("h", &strs(&[""]), &[], &none);
        assert_ne!(one, two);
        assert_ne!(empty, empty_elem);
        assert_eq!(empty, "host=h paths=");
    }
}
