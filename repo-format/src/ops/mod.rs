//! Operations on a repository, one module each.

pub mod backup;
pub mod copy;
pub mod restore;
pub mod walk;
