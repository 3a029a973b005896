//! What a storage handle remembers of the store's listings, and how a listing is split into
//! Coffer's objects and stray names. A command lists each directory at most once (object
//! stores bill per request): the handle keeps the listing, updated by its own writes and
//! deletes, and a bounded read takes an object's size from it instead of asking the store.
//! Pure bookkeeping over keys: uses nothing but `std` (and the crate's lock helper).

use std::collections::HashMap;
use std::sync::Mutex;

/// Listings already made by one handle (and its clones), by directory: keys with sizes, sorted.
#[derive(Default)]
pub(crate) struct Listings(Mutex<HashMap<String, Vec<(String, u64)>>>);

impl Listings {
    /// The remembered listing of `dir`, if there is one.
    pub(crate) fn get(&self, dir: &str) -> Option<Vec<(String, u64)>> {
        crate::sync::lock(&self.0).get(dir).cloned()
    }

    /// Remembers `listing` (sorted) as the content of `dir`.
    pub(crate) fn insert(&self, dir: &str, listing: Vec<(String, u64)>) {
        crate::sync::lock(&self.0).insert(dir.to_string(), listing);
    }

    /// Forgets every listing.
    pub(crate) fn clear(&self) {
        crate::sync::lock(&self.0).clear();
    }

    /// Adds a new object to the listing of its directory, if remembered.
    pub(crate) fn note_put(&self, key: &str, size: u64) {
        let mut listings = crate::sync::lock(&self.0);
        for (dir, list) in listings.iter_mut() {
            if key.starts_with(&format!("{dir}/")) {
                if let Err(at) = list.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
                    list.insert(at, (key.to_string(), size));
                }
            }
        }
    }

    /// Removes a deleted object from every remembered listing.
    pub(crate) fn note_delete(&self, key: &str) {
        for list in crate::sync::lock(&self.0).values_mut() {
            list.retain(|(k, _)| k != key);
        }
    }

    /// The size of `key` in the remembered listing of its top directory, if there is one.
    pub(crate) fn size_of(&self, key: &str) -> Option<u64> {
        let dir = key.split('/').next()?;
        let listings = crate::sync::lock(&self.0);
        let list = listings.get(dir)?;
        let at = list.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(list[at].1)
    }
}

/// A directory's listing split by name ([`Storage::list_objects`](super::Storage::list_objects));
/// keys with their sizes, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Keys with names Coffer writes in the directory.
    pub objects: Vec<(String, u64)>,
    /// Every other key: not Coffer's, never read, never deleted.
    pub stray: Vec<(String, u64)>,
}

impl Listing {
    /// Splits the listing of `dir` by [`is_object_name`].
    pub(crate) fn split(dir: &str, listing: Vec<(String, u64)>) -> Listing {
        let mut out = Listing::default();
        for (key, size) in listing {
            if is_object_name(dir, &key) {
                out.objects.push((key, size));
            } else {
                out.stray.push((key, size));
            }
        }
        out
    }
}

/// Whether `key` is a name Coffer writes under `dir`. The layout is owned by
/// [`crate::format::key::ObjectKey`]; listings ask it so that strays are never taken for objects.
pub fn is_object_name(dir: &str, key: &str) -> bool {
    crate::format::key::is_object_name(dir, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_listings_follow_puts_and_deletes_and_give_sizes() {
        let listings = Listings::default();
        listings.note_put("data/ab/x", 5);
        assert_eq!(
            listings.get("data"),
            None,
            "nothing listed yet: nothing remembered"
        );
        listings.insert("data", vec![("data/ab/y".into(), 2)]);
        listings.note_put("data/ab/x", 5);
        listings.note_put("data/ab/x", 9);
        listings.note_put("index/i", 1);
        assert_eq!(
            listings.get("data").unwrap(),
            [("data/ab/x".to_string(), 5), ("data/ab/y".to_string(), 2)]
        );
        assert_eq!(listings.size_of("data/ab/x"), Some(5));
        assert_eq!(listings.size_of("index/i"), None);
        listings.note_delete("data/ab/x");
        assert_eq!(listings.size_of("data/ab/x"), None);
        listings.clear();
        assert_eq!(listings.get("data"), None);
    }
}
