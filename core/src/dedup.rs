//! Message deduplication, RFC 7252 §4.5.
//!
//! A recipient must process a message only once however often it arrives, and must answer a
//! duplicate Confirmable message with the same ACK or RST. So each session remembers the
//! Message IDs it has seen, for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON), together with
//! the reply it sent, if any. The cache is capped per session; at the cap the oldest entry is
//! forgotten early, which only matters if a peer sends more than the cap within the lifetime.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::num::NonZeroU32;

use crate::time::Instant;
use crate::transmit::{Datagram, DatagramPool};

/// One remembered message: 24 bytes, and an empty table slot (`None`) costs no more, since
/// `seq` is never zero.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Tells this entry from a newer one for the same Message ID in the expiry queues.
    /// Wrapping would take 2^32 messages from one peer and then still needs the same
    /// Message ID to land on the same number.
    seq: NonZeroU32,
    mid: u16,
    /// The ACK or RST sent for this message, re-sent verbatim for a duplicate CON.
    pub(crate) reply: Option<Datagram>,
}

#[derive(Debug)]
pub(crate) struct Dedup {
    map: MidTable,
    /// Expiry order, one queue per lifetime so each queue is sorted by expiry.
    con: VecDeque<(Instant, u16, u32)>,
    non: VecDeque<(Instant, u16, u32)>,
    seq: u32,
    /// When its session last gave back memory (`Session::trim`), kept here because it
    /// fits in this struct's padding; `u32::MAX` before it ever has.
    pub(crate) trimmed_at: u32,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            map: MidTable::default(),
            con: VecDeque::new(),
            non: VecDeque::new(),
            seq: 0,
            trimmed_at: u32::MAX,
        }
    }
}

impl Dedup {
    pub(crate) fn get(&self, mid: u16) -> Option<&Entry> {
        self.map.get(mid)
    }

    /// Remembers `mid` until `expires`; at `cap` entries the oldest is forgotten first. The
    /// answers of forgotten entries go back to `pool`.
    pub(crate) fn insert(
        &mut self,
        mid: u16,
        confirmable: bool,
        expires: Instant,
        cap: usize,
        pool: &mut DatagramPool,
    ) {
        while self.map.len() >= cap && self.evict_oldest(pool) {}
        self.seq = NonZeroU32::new(self.seq.wrapping_add(1)).map_or(1, NonZeroU32::get);
        let seq = self.seq;
        let entry = Entry {
            seq: NonZeroU32::new(seq).unwrap_or(NonZeroU32::MIN),
            mid,
            reply: None,
        };
        self.map.insert(entry);
        let queue = if confirmable {
            &mut self.con
        } else {
            &mut self.non
        };
        if queue.capacity() == 0 {
            // Room for this entry only, rather than the four a first push reserves.
            queue.reserve_exact(1);
        }
        queue.push_back((expires, mid, seq));
    }

    pub(crate) fn set_reply(&mut self, mid: u16, reply: Datagram) {
        if let Some(e) = self.map.get_mut(mid) {
            e.reply = Some(reply);
        }
    }

    fn evict_oldest(&mut self, pool: &mut DatagramPool) -> bool {
        let take_con = match (self.con.front(), self.non.front()) {
            (Some(c), Some(n)) => c.2 < n.2,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        let queue = if take_con {
            &mut self.con
        } else {
            &mut self.non
        };
        if let Some((_, mid, seq)) = queue.pop_front() {
            Self::forget(&mut self.map, mid, seq, pool);
        }
        true
    }

    fn forget(map: &mut MidTable, mid: u16, seq: u32, pool: &mut DatagramPool) {
        // A Message ID re-used after eviction has a newer entry that must survive.
        if map.get(mid).is_some_and(|e| e.seq.get() == seq) {
            if let Some(reply) = map.remove(mid).and_then(|e| e.reply) {
                pool.recycle(reply);
            }
        }
    }

    /// Forgets what has outlived its lifetime at `now`; the answers go back to `pool`.
    pub(crate) fn expire(&mut self, now: Instant, pool: &mut DatagramPool) {
        for queue in [&mut self.con, &mut self.non] {
            while let Some(&(expires, mid, seq)) = queue.front() {
                if expires > now {
                    break;
                }
                queue.pop_front();
                Self::forget(&mut self.map, mid, seq, pool);
            }
        }
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let c = self.con.front().map(|e| e.0);
        let n = self.non.front().map(|e| e.0);
        match (c, n) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Message ID → entry, as an open-addressing table with linear probing (at most half full) and
/// backward-shift deletion: O(1) lookups, inserts and removals with no per-entry allocation,
/// where a `BTreeMap` paid a tree search plus node rebalancing on every message. Message IDs
/// are peer-chosen, but the table holds at most `max_dedup_entries` of them, which bounds any
/// probe sequence a hostile peer can build.
#[derive(Debug, Default)]
pub(crate) struct MidTable {
    slots: Vec<Option<Entry>>,
    len: usize,
}

impl MidTable {
    fn home(&self, mid: u16) -> usize {
        // Fibonacci hashing spreads sequential Message IDs over the table.
        (u32::from(mid).wrapping_mul(0x9E37_79B1) >> 16) as usize & (self.slots.len() - 1)
    }

    fn find(&self, mid: u16) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(mid);
        loop {
            match self.slots.get(i)? {
                None => return None,
                Some(e) if e.mid == mid => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, mid: u16) -> Option<&Entry> {
        let i = self.find(mid)?;
        self.slots.get(i)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, mid: u16) -> Option<&mut Entry> {
        let i = self.find(mid)?;
        self.slots.get_mut(i)?.as_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, entry: Entry) {
        let mid = entry.mid;
        if let Some(i) = self.find(mid) {
            self.slots[i] = Some(entry);
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(mid);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some(entry);
        self.len += 1;
    }

    pub(crate) fn remove(&mut self, mid: u16) -> Option<Entry> {
        let mut hole = self.find(mid)?;
        let removed = self.slots[hole].take();
        self.len -= 1;
        let mask = self.slots.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(e) = &self.slots[j] else {
                return removed;
            };
            let home = self.home(e.mid);
            // Move the entry back into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }

    fn grow(&mut self) {
        // Most sessions remember one or two messages at a time: start small.
        let cap = (self.slots.len() * 2).max(2);
        let old = core::mem::replace(&mut self.slots, (0..cap).map(|_| None).collect());
        self.len = 0;
        for entry in old.into_iter().flatten() {
            self.insert(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_lifetime_then_forgets() {
        let mut d = Dedup::default();
        let mut pool = DatagramPool::new(0);
        d.insert(7, true, Instant::from_secs(247), 16, &mut pool);
        d.insert(8, false, Instant::from_secs(145), 16, &mut pool);
        d.expire(Instant::from_secs(144), &mut pool);
        assert!(d.get(7).is_some() && d.get(8).is_some());
        d.expire(Instant::from_secs(145), &mut pool);
        assert!(d.get(8).is_none(), "NON entry must go at NON_LIFETIME");
        assert!(d.get(7).is_some());
        d.expire(Instant::from_secs(247), &mut pool);
        assert_eq!(d.len(), 0);
        assert_eq!(d.next_expiry(), None);
    }

    #[test]
    fn mid_table_matches_a_model() {
        // Deterministic pseudo-random insert/remove/lookup against BTreeMap.
        let mut model = alloc::collections::BTreeMap::new();
        let mut t = MidTable::default();
        let mut x = 12345u32;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mid = (x % 97) as u16 * 673;
            if x % 3 == 0 {
                let _ = t.remove(mid);
                model.remove(&mid);
            } else {
                let seq = NonZeroU32::new(step + 1).unwrap();
                t.insert(Entry {
                    seq,
                    mid,
                    reply: None,
                });
                model.insert(mid, seq);
            }
            assert_eq!(t.len(), model.len());
            let probe = ((x >> 8) % 97) as u16 * 673;
            assert_eq!(t.get(probe).map(|e| e.seq), model.get(&probe).copied());
        }
    }

    #[test]
    fn cap_evicts_oldest_first() {
        let mut d = Dedup::default();
        let mut pool = DatagramPool::new(0);
        for mid in 0..4u16 {
            d.insert(
                mid,
                mid % 2 == 0,
                Instant::from_secs(100 + mid as u64),
                3,
                &mut pool,
            );
        }
        assert_eq!(d.len(), 3);
        assert!(d.get(0).is_none(), "oldest entry evicted");
        assert!(d.get(1).is_some() && d.get(3).is_some());
    }
}
