//! Local file-system helpers shared by the local storage backend and restore: writes that bypass
//! the page cache ([`direct`]), symlink-safe creation under a directory ([`safe`]), and sparse
//! files' holes ([`sparse`]), extended attributes and ACLs ([`xattr`]).

pub mod direct;
pub mod safe;
pub mod sparse;
pub mod xattr;
