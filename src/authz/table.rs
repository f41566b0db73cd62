//! The decision table: a bounded concurrent map from decision keys to cached
//! decisions, built for a million entries at about 100 bytes each.
//!
//! - Sharded by key hash. A shard is a read-write lock over a dense array
//!   of slots (key and entry, 88 bytes) and a hashbrown index of slot
//!   numbers (4 bytes and one control byte per bucket). A lookup takes the
//!   read lock; nothing is allocated on a hit.
//! - Eviction is CLOCK: a hit sets the slot's reference bit; an insert into
//!   a full shard moves the shard's hand past referenced slots (clearing
//!   their bit) to the first expired or unreferenced one and reuses it. No
//!   per-entry queue nodes, no timers.
//! - Expiry is checked on read: an entry past its `evict_at` is absent.
//!   Expired slots are reused first by eviction and removed by
//!   [`Table::sweep`] (the cache's maintenance).
//! - The bound is per shard (the total divided evenly), so a table can
//!   start evicting a little before the total is reached.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::RwLock;

use super::entry::Cached;
use super::key::{DecisionKey, Fingerprint, KeyRef, hash_parts};

/// Entries per shard at which one more shard pays (up to [`MAX_SHARDS`]).
const ENTRIES_PER_SHARD: u64 = 4096;
/// Most shards: far more than cores, so two writers rarely meet.
const MAX_SHARDS: u64 = 64;

/// A bounded map of decisions.
pub(crate) struct Table {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    len: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    /// Slot numbers, by key hash.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Where eviction looks next.
    hand: usize,
}

/// A key and its entry.
struct Slot {
    fingerprint: Fingerprint,
    database: Arc<str>,
    action: u8,
    /// Read since the hand last passed.
    referenced: AtomicBool,
    value: Cached,
}

impl Slot {
    fn key(&self) -> KeyRef<'_> {
        KeyRef {
            fingerprint: self.fingerprint,
            database: &self.database,
            action: self.action,
        }
    }
}

impl Table {
    /// A table of at most about `max_entries`.
    pub(crate) fn new(max_entries: u64) -> Self {
        let max_entries = max_entries.max(1);
        let shards = (max_entries / ENTRIES_PER_SHARD)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let per_shard = usize::try_from(max_entries.div_ceil(shards)).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            per_shard,
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    fn hash(&self, key: &KeyRef<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    fn hash_slot(hasher: &RandomState, slot: &Slot) -> u64 {
        let mut state = hasher.build_hasher();
        hash_parts(&slot.fingerprint, &slot.database, slot.action, &mut state);
        std::hash::Hasher::finish(&state)
    }

    /// The shard of `hash`: bits the shard's own index does not use (its
    /// bucket from the low bits, its tag from the top seven).
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        let n = self.shards.len();
        &self.shards[(hash >> 40) as usize & (n - 1)]
    }

    /// The entry for `key`, unless absent or gone at `now`.
    pub(crate) fn get(&self, key: &KeyRef<'_>, now: u64) -> Option<Cached> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        let &at = shard
            .index
            .find(hash, |&i| shard.slots[i as usize].key() == *key)?;
        let slot = &shard.slots[at as usize];
        if slot.value.evict_at() <= now {
            return None;
        }
        // A store only when it changes: a hot entry's line stays shared.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(slot.value.clone())
    }

    /// Stores `value` under `key`, evicting another entry when the shard is
    /// full.
    pub(crate) fn insert(&self, key: &DecisionKey, value: Cached, now: u64) {
        let borrowed = key.borrowed();
        let hash = self.hash(&borrowed);
        let mut guard = self.shard(hash).write();
        let Shard { index, slots, hand } = &mut *guard;
        if let Some(&at) = index.find(hash, |&i| slots[i as usize].key() == borrowed) {
            slots[at as usize].value = value;
            return;
        }
        let slot = Slot {
            fingerprint: borrowed.fingerprint,
            database: Arc::clone(key.database()),
            action: borrowed.action,
            referenced: AtomicBool::new(false),
            value,
        };
        let hasher = &self.hasher;
        let at = if slots.len() < self.per_shard {
            slots.push(slot);
            self.len.fetch_add(1, Ordering::Relaxed);
            slots.len() - 1
        } else {
            let victim = victim(slots, hand, now);
            let old = Self::hash_slot(hasher, &slots[victim]);
            if let Ok(entry) = index.find_entry(old, |&i| i as usize == victim) {
                entry.remove();
            }
            slots[victim] = slot;
            victim
        };
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        index.insert_unique(hash, at, |&i| Self::hash_slot(hasher, &slots[i as usize]));
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.write();
            let removed = shard.slots.len();
            shard.index.clear();
            shard.slots.clear();
            shard.hand = 0;
            self.len.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Removes the entries gone at `now`.
    pub(crate) fn sweep(&self, now: u64) {
        for shard in &self.shards {
            if !shard.read().slots.iter().any(|s| s.value.evict_at() <= now) {
                continue;
            }
            let mut guard = shard.write();
            let Shard { index, slots, hand } = &mut *guard;
            let hasher = &self.hasher;
            // Downwards: the slot moved into a freed place was looked at.
            for at in (0..slots.len()).rev() {
                if slots[at].value.evict_at() > now {
                    continue;
                }
                let hash = Self::hash_slot(hasher, &slots[at]);
                if let Ok(entry) = index.find_entry(hash, |&i| i as usize == at) {
                    entry.remove();
                }
                let last = slots.len() - 1;
                slots.swap_remove(at);
                self.len.fetch_sub(1, Ordering::Relaxed);
                if at != last {
                    let moved = Self::hash_slot(hasher, &slots[at]);
                    if let Some(i) = index.find_mut(moved, |&i| i as usize == last) {
                        *i = u32::try_from(at).unwrap_or(u32::MAX);
                    }
                }
            }
            if *hand >= slots.len() {
                *hand = 0;
            }
        }
    }

    /// Entries held (gone ones included until swept).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// The slot to reuse in a full shard: the first expired or unreferenced
/// one from the hand on, clearing reference bits on the way.
fn victim(slots: &mut [Slot], hand: &mut usize, now: u64) -> usize {
    let n = slots.len();
    // Twice round at most: the first pass clears every bit it passes.
    for _ in 0..(2 * n) {
        let at = *hand % n;
        *hand = (at + 1) % n;
        let slot = &mut slots[at];
        if slot.value.evict_at() <= now || !std::mem::take(slot.referenced.get_mut()) {
            return at;
        }
    }
    *hand % n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::subject::SubjectId;
    use crate::credentials::Token;

    fn key(token: usize, database: &str) -> DecisionKey {
        let token = Token::new(format!("t{token}").into_bytes()).expect("non-empty");
        DecisionKey::new(Fingerprint::of(&token), Arc::from(database), 2)
    }

    fn entry(evict_at: u64) -> Cached {
        Cached::new(Some(SubjectId::of("s")), true, 0, 0, evict_at, evict_at)
    }

    #[test]
    fn stores_finds_and_replaces() {
        let t = Table::new(100);
        let k = key(1, "db");
        assert!(t.get(&k.borrowed(), 0).is_none());
        t.insert(&k, entry(10), 0);
        assert!(t.get(&k.borrowed(), 5).is_some());
        assert!(t.get(&key(1, "other").borrowed(), 5).is_none());
        assert!(t.get(&key(2, "db").borrowed(), 5).is_none());
        t.insert(&k, entry(20), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&k.borrowed(), 5).map(|c| c.evict_at()), Some(20));
        assert!(t.get(&k.borrowed(), 20).is_none(), "gone at evict_at");
    }

    #[test]
    fn a_full_table_evicts_unreferenced_entries_first() {
        let t = Table::new(64);
        assert_eq!(t.shards.len(), 1);
        for i in 0..64 {
            t.insert(&key(i, "db"), entry(1000), 0);
        }
        // Read half of them: the other half goes first.
        for i in 0..32 {
            assert!(t.get(&key(i, "db").borrowed(), 1).is_some());
        }
        for i in 64..96 {
            t.insert(&key(i, "db"), entry(1000), 1);
        }
        assert_eq!(t.len(), 64);
        for i in 0..32 {
            assert!(t.get(&key(i, "db").borrowed(), 2).is_some(), "{i} kept");
        }
        for i in 32..64 {
            assert!(t.get(&key(i, "db").borrowed(), 2).is_none(), "{i} evicted");
        }
        for i in 64..96 {
            assert!(t.get(&key(i, "db").borrowed(), 2).is_some(), "{i} new");
        }
    }

    #[test]
    fn expired_entries_are_evicted_first_and_swept() {
        let t = Table::new(4);
        for i in 0..4 {
            t.insert(&key(i, "db"), entry(if i == 2 { 5 } else { 100 }), 0);
            assert!(t.get(&key(i, "db").borrowed(), 0).is_some());
        }
        t.insert(&key(9, "db"), entry(100), 10);
        assert!(t.get(&key(2, "db").borrowed(), 10).is_none());
        for i in [0, 1, 3, 9] {
            assert!(t.get(&key(i, "db").borrowed(), 10).is_some(), "{i}");
        }
        t.sweep(100);
        assert_eq!(t.len(), 0);
        t.insert(&key(1, "db"), entry(200), 100);
        for i in [2, 3, 4] {
            t.insert(&key(i, "db"), entry(150 + i as u64), 100);
        }
        t.sweep(153);
        assert_eq!(t.len(), 2);
        for (i, there) in [(1, true), (2, false), (3, false), (4, true)] {
            assert_eq!(t.get(&key(i, "db").borrowed(), 153).is_some(), there, "{i}");
        }
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.get(&key(1, "db").borrowed(), 153).is_none());
    }

    #[test]
    fn slots_are_compact() {
        assert!(std::mem::size_of::<Slot>() <= 88);
    }
}
