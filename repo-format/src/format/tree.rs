//! Trees: one blob of kind Tree per directory, a JSON document `{"nodes": [...]}` whose nodes are
//! sorted by the bytes of their names, so an unchanged directory encodes to the same bytes and
//! deduplicates.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device; its number is in [`Node::device`].
    Chardev,
    /// A block device; its number is in [`Node::device`].
    Blockdev,
}

impl NodeKind {
    /// Whether it is a FIFO or device node: metadata only, no content, no target.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev
        )
    }
}

/// A device number, split as the kernel splits it, so it reads the same on any platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub major: u64,
    pub minor: u64,
}

/// One extended attribute of a node: its name (`user.*`, `trusted.*`, `security.*`, or one of
/// the POSIX ACL attributes `system.posix_acl_access` / `system.posix_acl_default`) and its
/// value as hex. Limits: [`MAX_XATTR_VALUE`] bytes per value, [`MAX_XATTRS`] per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: String,
    /// The value's bytes, hex.
    pub value: String,
}

/// The largest extended attribute value kept (Linux's own limit, `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// The most extended attributes kept per node.
pub const MAX_XATTRS: usize = 256;

/// Whether an extended attribute of this name is kept: the namespaces a backup stores.
pub fn xattr_kept(name: &str) -> bool {
    (name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security."))
        && name.len() > name.find('.').unwrap_or(0) + 1
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default"
}

/// A node's `xattrs` from the (name, value) pairs read from a file: the kept names only,
/// sorted, within the limits. What is past the limits is left out with a note in `skipped`.
pub fn xattrs_from(mut read: Vec<(String, Vec<u8>)>, skipped: &mut Vec<String>) -> Vec<Xattr> {
    read.retain(|(name, _)| xattr_kept(name) && !name.contains('\0'));
    read.sort();
    read.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(read.len().min(MAX_XATTRS));
    for (name, value) in read {
        if value.len() > MAX_XATTR_VALUE {
            skipped.push(format!(
                "extended attribute {name}: {} bytes (at most {MAX_XATTR_VALUE} are kept)",
                value.len()
            ));
        } else if out.len() == MAX_XATTRS {
            skipped.push(format!(
                "extended attribute {name}: more than {MAX_XATTRS} attributes (the rest are not kept)"
            ));
        } else {
            out.push(Xattr {
                name,
                value: hex::encode(value),
            });
        }
    }
    out
}

#[cfg(test)]
impl Node {
    /// A node of `kind` named `name` with every other field empty or zero (mode 0644), for
    /// tests to adjust with struct update syntax.
    pub(crate) fn for_tests(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.into(),
            name_bytes: None,
            kind,
            mode: 0o644,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            target_bytes: None,
            device: None,
            links: None,
            device_id: None,
            sparse: false,
            xattrs: Vec::new(),
        }
    }
}

impl Node {
    /// The node's extended attributes as (name, value) pairs; one whose value does not decode
    /// (refused by [`Tree::decode`], so never from storage) is left out with a note.
    pub fn xattr_values(&self) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        let mut bad = Vec::new();
        let values = self
            .xattrs
            .iter()
            .filter_map(|x| match x.value_bytes() {
                Ok(v) => Some((x.name.clone(), v)),
                Err(e) => {
                    bad.push(format!("{}: {e}", x.name));
                    None
                }
            })
            .collect();
        (values, bad)
    }
}

impl Xattr {
    /// The value's bytes.
    pub fn value_bytes(&self) -> Result<Vec<u8>> {
        hex::decode(&self.value).map_err(|e| {
            Error::corrupt(
                "tree",
                &self.name,
                format!("extended attribute value is not hex: {e}"),
            )
        })
    }
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name, as UTF-8 (lossy if `name_bytes` is set).
    pub name: String,
    /// The exact name bytes, hex, present only when the name is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch (change detection only).
    #[serde(default)]
    pub ctime_ns: i64,
    #[serde(default)]
    pub inode: u64,
    pub uid: u32,
    pub gid: u32,
    /// File size in bytes (files only).
    #[serde(default)]
    pub size: u64,
    /// Content blobs in order (files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// The directory's tree blob (directories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// Symlink target (lossy UTF-8; `target_bytes` holds the exact bytes when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<String>,
    /// The device number (character and block devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// How many hard links the file had (`st_nlink`), present only when more than one (files
    /// only): restore links the nodes of one snapshot that share `device_id` and `inode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<u64>,
    /// The file system the file was on (`st_dev`), present with `links`: with `inode`, it tells
    /// which nodes are links to one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u64>,
    /// The file had holes (files only): restore leaves its all-zero blocks as holes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Extended attributes (with POSIX ACLs and file capabilities), sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

/// What is wrong with a node's extended attributes, if anything: a name outside the kept
/// namespaces or with a NUL, a duplicate or unsorted name, a value that is not hex or too long,
/// too many of them.
fn invalid_xattrs(xattrs: &[Xattr]) -> Option<String> {
    if xattrs.len() > MAX_XATTRS {
        return Some(format!(
            "{} extended attributes (at most {MAX_XATTRS})",
            xattrs.len()
        ));
    }
    for (i, x) in xattrs.iter().enumerate() {
        if !xattr_kept(&x.name) || x.name.contains('\0') {
            return Some(format!(
                "extended attribute name {:?} is not allowed",
                x.name
            ));
        }
        if i > 0 && xattrs[i - 1].name >= x.name {
            return Some("extended attributes are not sorted by name".into());
        }
        if x.value.len() > 2 * MAX_XATTR_VALUE || hex::decode(&x.value).is_err() {
            return Some(format!("extended attribute {:?} has a bad value", x.name));
        }
    }
    None
}

/// Splits raw bytes into the lossy UTF-8 form and, when lossy, the exact hex.
pub fn encode_name(raw: &OsStr) -> (String, Option<String>) {
    match raw.to_str() {
        Some(s) => (s.to_string(), None),
        None => (
            raw.to_string_lossy().into_owned(),
            Some(hex::encode(raw.as_bytes())),
        ),
    }
}

fn decode_name(text: &str, exact: &Option<String>, what: &str) -> Result<Vec<u8>> {
    match exact {
        None => Ok(text.as_bytes().to_vec()),
        Some(h) => {
            hex::decode(h).map_err(|e| Error::corrupt("tree", what, format!("bad name bytes: {e}")))
        }
    }
}

impl Node {
    /// The file this node is one hard link of, when it had several: `(device_id, inode)`.
    pub fn link_group(&self) -> Option<(u64, u64)> {
        match (self.kind, self.links, self.device_id) {
            (NodeKind::File, Some(links), Some(device)) if links > 1 => Some((device, self.inode)),
            _ => None,
        }
    }

    /// The exact name bytes.
    pub fn name_raw(&self) -> Result<Vec<u8>> {
        decode_name(&self.name, &self.name_bytes, &self.name)
    }

    /// The name's bytes for ordering and lookup: borrowed when the name is UTF-8 (almost
    /// always), so comparing costs no allocation; empty for undecodable name bytes (which
    /// [`Tree::decode`] refuses).
    fn name_key(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.name_bytes {
            None => std::borrow::Cow::Borrowed(self.name.as_bytes()),
            Some(_) => std::borrow::Cow::Owned(self.name_raw().unwrap_or_default()),
        }
    }

    /// The exact symlink target bytes.
    pub fn target_raw(&self) -> Result<Vec<u8>> {
        decode_name(
            self.target.as_deref().unwrap_or(""),
            &self.target_bytes,
            &self.name,
        )
    }
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts nodes by name bytes: the canonical order.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name_key().cmp(&b.name_key()));
    }

    /// Canonical JSON encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a tree blob: names must be non-empty, not `.`/`..`, without `/`, and
    /// each node's fields must fit its kind. Restores rely on this to never escape their target.
    pub fn decode(id: &BlobId, bytes: &[u8]) -> Result<Tree> {
        let tree: Tree =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("tree", id, e))?;
        for node in &tree.nodes {
            let raw = node.name_raw()?;
            if raw.is_empty()
                || raw == b"."
                || raw == b".."
                || raw.contains(&b'/')
                || raw.contains(&0)
            {
                return Err(Error::corrupt(
                    "tree",
                    id,
                    format!("invalid node name {:?}", node.name),
                ));
            }
            let ok = match node.kind {
                NodeKind::Dir => node.subtree.is_some() && node.content.is_empty(),
                NodeKind::File => node.subtree.is_none(),
                NodeKind::Symlink => {
                    node.target.is_some() && node.content.is_empty() && node.subtree.is_none()
                }
                NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                    node.content.is_empty()
                        && node.subtree.is_none()
                        && node.target.is_none()
                        && node.device.is_some() == (node.kind != NodeKind::Fifo)
                }
            };
            if !ok {
                return Err(Error::corrupt(
                    "tree",
                    id,
                    format!("node {:?} has fields that do not fit its type", node.name),
                ));
            }
            if let Some(bad) = invalid_xattrs(&node.xattrs) {
                return Err(Error::corrupt(
                    "tree",
                    id,
                    format!("node {:?}: {bad}", node.name),
                ));
            }
        }
        Ok(tree)
    }

    /// The node named `name`, by binary search: nodes are in the canonical order ([`Tree::sort`],
    /// which the format requires). In a tree stored out of order a node may not be found; a
    /// backup then reads the file again instead of taking it from the parent (slower, never
    /// wrong). A scan per name made backups of large directories quadratic.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name_key().as_ref().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn file(name: &str) -> Node {
        Node {
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            size: 5,
            content: vec![BlobId([1; 32])],
            ..Node::for_tests(name, NodeKind::File)
        }
    }

    #[test]
    fn round_trip_and_order() {
        let mut t = Tree {
            nodes: vec![file("b"), file("a"), file("é")],
        };
        t.sort();
        assert_eq!(t.nodes[0].name, "a");
        let id = BlobId([0; 32]);
        assert_eq!(Tree::decode(&id, &t.encode()).unwrap(), t);
        assert!(t.find(b"b").is_some());
    }

    #[test]
    fn find_looks_names_up_in_the_canonical_order() {
        let mut t = Tree {
            nodes: (0..1000).map(|i| file(&format!("f{i}"))).collect(),
        };
        let mut odd = file("caf\u{fffd}");
        let (name, exact) = encode_name(OsStr::from_bytes(b"caf\xe9"));
        (odd.name, odd.name_bytes) = (name, exact);
        t.nodes.push(odd);
        t.sort();
        for i in 0..1000 {
            let name = format!("f{i}");
            assert_eq!(t.find(name.as_bytes()).unwrap().name, name);
        }
        assert!(t.find(b"caf\xe9").is_some());
        assert!(t.find(b"f1000").is_none() && t.find(b"").is_none());
    }

    #[test]
    fn non_utf8_names_survive() {
        let raw = OsStr::from_bytes(b"caf\xe9");
        let (name, exact) = encode_name(raw);
        let mut n = file(&name);
        n.name_bytes = exact;
        assert_eq!(n.name_raw().unwrap(), b"caf\xe9");
    }

    #[test]
    fn hostile_names_are_refused() {
        let id = BlobId([0; 32]);
        for bad in ["", ".", "..", "a/b", "../../etc"] {
            let t = Tree {
                nodes: vec![file(bad)],
            };
            assert!(Tree::decode(&id, &t.encode()).is_err(), "{bad:?} accepted");
        }
        let mut n = file("x");
        n.name_bytes = Some(hex::encode(b"../x"));
        assert!(Tree::decode(&id, &Tree { nodes: vec![n] }.encode()).is_err());
        assert!(Tree::decode(&id, b"{not json").is_err());
        let mut dir = file("d");
        dir.kind = NodeKind::Dir;
        assert!(Tree::decode(&id, &Tree { nodes: vec![dir] }.encode()).is_err());
    }

    #[test]
    fn extended_attributes_outside_the_rules_are_refused() {
        let id = BlobId([0; 32]);
        let with = |pairs: &[(&str, &str)]| {
            let mut n = file("x");
            n.xattrs = pairs
                .iter()
                .map(|(name, value)| Xattr {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect();
            Tree::decode(&id, &Tree { nodes: vec![n] }.encode())
        };
        let good = with(&[
            ("security.capability", "01"),
            ("system.posix_acl_access", "02"),
            ("user.a", ""),
        ])
        .unwrap();
        assert_eq!(good.nodes[0].xattrs[0].value_bytes().unwrap(), [1]);
        let long = "00".repeat(MAX_XATTR_VALUE + 1);
        for bad in [
            vec![("system.nfs4_acl", "00")],
            vec![("user.", "00")],
            vec![("user.a\0b", "00")],
            vec![("user.b", "00"), ("user.a", "00")],
            vec![("user.a", "00"), ("user.a", "00")],
            vec![("user.a", "zz")],
            vec![("user.a", long.as_str())],
        ] {
            assert!(with(&bad).is_err(), "{bad:?} accepted");
        }
        let many: Vec<(String, &str)> = (0..=MAX_XATTRS)
            .map(|i| (format!("user.{i:04}"), ""))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert!(with(&many).is_err());
    }

    #[test]
    fn special_files_carry_only_what_fits_them() {
        let id = BlobId([0; 32]);
        let special = |kind, device| Node {
            kind,
            size: 0,
            content: Vec::new(),
            device,
            ..file("x")
        };
        let null = Some(Device { major: 1, minor: 3 });
        let good = Tree {
            nodes: vec![
                special(NodeKind::Fifo, None),
                special(NodeKind::Chardev, null),
                special(NodeKind::Blockdev, Some(Device { major: 8, minor: 1 })),
            ],
        };
        let text = String::from_utf8(good.encode()).unwrap();
        assert!(text.contains(r#""type":"chardev""#), "{text}");
        assert!(text.contains(r#""device":{"major":1,"minor":3}"#), "{text}");
        assert_eq!(Tree::decode(&id, &good.encode()).unwrap(), good);
        for bad in [
            special(NodeKind::Chardev, None),
            special(NodeKind::Fifo, null),
            Node {
                content: vec![BlobId([1; 32])],
                ..special(NodeKind::Fifo, None)
            },
        ] {
            let t = Tree { nodes: vec![bad] };
            assert!(Tree::decode(&id, &t.encode()).is_err(), "{:?}", t.nodes[0]);
        }
        // A type this reader does not know is refused, not guessed at.
        let unknown =
            br#"{"nodes":[{"name":"s","type":"door","mode":0,"mtime_ns":0,"uid":0,"gid":0}]}"#;
        assert!(Tree::decode(&id, unknown).is_err());
        // Nodes written before these fields existed read as before.
        let old =
            br#"{"nodes":[{"name":"f","type":"file","mode":420,"mtime_ns":0,"uid":0,"gid":0}]}"#;
        assert_eq!(Tree::decode(&id, old).unwrap().nodes[0].device, None);
    }
}
