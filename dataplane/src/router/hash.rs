//! The hasher of the index's maps.
//!
//! Subjects come from clients, so the maps keyed by them must resist crafted
//! collisions: aHash with a random seed per map is both that and fast (a
//! cache hit hashes one subject per publish; SipHash would cost more than the
//! rest of the hit).

use std::collections::HashMap;

pub(super) type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
