//! Operations on a repository, one module each.

pub mod backup;
pub mod check;
pub mod copy;
pub mod forget;
pub mod prune;
pub mod restore;
pub mod walk;
