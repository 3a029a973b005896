//! Local file-system helpers shared by the local storage backend and restore: writes that bypass
//! the page cache ([`direct`]) and symlink-safe creation under a directory ([`safe`]).

pub mod direct;
pub mod safe;
