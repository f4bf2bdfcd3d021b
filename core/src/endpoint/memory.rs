//! What ended sessions leave behind for EXCHANGE_LIFETIME (RFC 7252 §4.4, §4.5): their
//! deduplication state and Message ID counter, restored if the peer returns meanwhile.
//!
//! Entries are filed oldest first, which is also their expiry order (each expires
//! EXCHANGE_LIFETIME after it was filed, and time never goes back), so expiry and eviction
//! both take from the front. A returning peer takes its entry out of the middle, leaving a
//! hole that leaves with the entries around it; holes count towards the cap, so the queue
//! never outgrows `max_remembered_peers` however fast peers come and go. Peers are found
//! through a [`PeerIndex`] of entry ids: the same hash table as the sessions', and its code.

use alloc::collections::VecDeque;
use core::net::SocketAddr;

use super::peers::{Addresses, PeerIndex};
use crate::session::PeerMemory;
use crate::time::Instant;
use crate::transmit::DatagramPool;

/// Ids are counted modulo 2^31, which keeps them clear of the index's empty marker; the
/// queue holds far fewer entries than that (see [`Memories::file`]).
const ID_MASK: u32 = 0x7FFF_FFFF;

#[derive(Debug)]
struct Remembered {
    peer: SocketAddr,
    memory: PeerMemory,
    expires: Instant,
}

/// The queue, apart from its index so that the index can look addresses up in it while it
/// changes.
struct Entries {
    queue: VecDeque<Option<Remembered>>,
    /// The id of `queue[0]`.
    first: u32,
}

impl Addresses for Entries {
    fn address(&self, id: u32) -> Option<&SocketAddr> {
        let at = id.wrapping_sub(self.first) & ID_MASK;
        self.queue.get(at as usize)?.as_ref().map(|r| &r.peer)
    }
}

pub(crate) struct Memories {
    entries: Entries,
    index: PeerIndex,
    /// Entries that are not holes.
    live: usize,
}

impl Memories {
    pub(crate) fn new(keys: (u64, u64)) -> Self {
        Memories {
            entries: Entries {
                queue: VecDeque::new(),
                first: 0,
            },
            index: PeerIndex::new(keys),
            live: 0,
        }
    }

    /// Peers remembered.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// When the oldest entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        // The front is never a hole.
        self.entries.queue.front()?.as_ref().map(|r| r.expires)
    }

    /// Takes back what `peer`'s last session left, if it is still remembered.
    pub(crate) fn take(&mut self, peer: &SocketAddr) -> Option<PeerMemory> {
        let id = self.index.get(peer, &self.entries)?;
        self.index.remove(peer, id, &self.entries);
        let at = id.wrapping_sub(self.entries.first) & ID_MASK;
        let taken = self.entries.queue.get_mut(at as usize)?.take()?;
        self.live -= 1;
        self.drop_holes();
        Some(taken.memory)
    }

    /// Files what a session with `peer` left, until `expires`, within `cap` entries (the
    /// oldest make room).
    pub(crate) fn file(
        &mut self,
        peer: SocketAddr,
        memory: PeerMemory,
        expires: Instant,
        cap: usize,
    ) {
        // Far below 2^31 ids, whatever the configuration says.
        let cap = cap.min(1 << 24);
        self.take(&peer); // one entry per peer: a newer one replaces it
        if cap == 0 {
            return;
        }
        while self.entries.queue.len() >= cap {
            self.pop_front();
        }
        let id = self
            .entries
            .first
            .wrapping_add(self.entries.queue.len() as u32)
            & ID_MASK;
        self.entries.queue.push_back(Some(Remembered {
            peer,
            memory,
            expires,
        }));
        self.live += 1;
        self.index.insert(id, &self.entries);
    }

    /// Forgets every entry that expired by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self.next_expiry().is_some_and(|t| t <= now) {
            self.pop_front();
        }
    }

    /// Takes back `peer`'s memory with its deduplication entries expired by `now` (the
    /// datagrams they kept go back to `pool`).
    pub(crate) fn restore(
        &mut self,
        peer: &SocketAddr,
        now: Instant,
        pool: &mut DatagramPool,
    ) -> Option<PeerMemory> {
        let mut memory = self.take(peer)?;
        memory.expire(now, pool);
        Some(memory)
    }

    fn pop_front(&mut self) {
        if let Some(Some(r)) = self.entries.queue.front() {
            let peer = r.peer;
            self.index.remove(&peer, self.entries.first, &self.entries);
            self.live -= 1;
        }
        self.entries.queue.pop_front();
        self.entries.first = self.entries.first.wrapping_add(1) & ID_MASK;
        self.drop_holes();
    }

    /// Keeps the front from being a hole.
    fn drop_holes(&mut self) {
        while matches!(self.entries.queue.front(), Some(None)) {
            self.entries.queue.pop_front();
            self.entries.first = self.entries.first.wrapping_add(1) & ID_MASK;
        }
        if self.entries.queue.is_empty() {
            // An idle endpoint gives the queue's memory back.
            self.entries.queue = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], n))
    }

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    #[test]
    fn a_peer_gets_back_its_own_memory_once() {
        let mut m = Memories::new((1, 2));
        for n in 0..100 {
            m.file(peer(n), PeerMemory::with_next_mid(n), at(10), 1000);
        }
        assert_eq!(m.len(), 100);
        for n in (0..100).rev().step_by(3) {
            assert_eq!(m.take(&peer(n)).map(|p| p.next_mid()), Some(n));
            assert!(m.take(&peer(n)).is_none(), "taken twice");
        }
        assert_eq!(m.len(), 100 - 34);
        for n in 0..100 {
            let kept = (99 - n) % 3 != 0;
            assert_eq!(m.take(&peer(n)).is_some(), kept, "peer {n}");
        }
        assert_eq!(m.len(), 0);
        assert_eq!(m.next_expiry(), None);
    }

    #[test]
    fn entries_expire_in_filing_order_and_holes_never_lead() {
        let mut m = Memories::new((3, 4));
        for n in 0..10 {
            m.file(
                peer(n),
                PeerMemory::with_next_mid(n),
                at(u64::from(n) + 1),
                100,
            );
        }
        m.take(&peer(0));
        m.take(&peer(1));
        assert_eq!(m.next_expiry(), Some(at(3)), "the front skips the holes");
        m.expire(at(5));
        assert_eq!(m.len(), 5);
        assert!(m.take(&peer(4)).is_none(), "expired");
        assert_eq!(m.take(&peer(5)).map(|p| p.next_mid()), Some(5));
        m.expire(at(100));
        assert_eq!((m.len(), m.next_expiry()), (0, None));
    }

    #[test]
    fn the_cap_bounds_entries_and_holes_alike() {
        let mut m = Memories::new((5, 6));
        // A peer that comes and goes a million times leaves no trail.
        for round in 0..1_000_000u32 {
            m.file(
                peer(1),
                PeerMemory::with_next_mid(round as u16),
                at(1000),
                8,
            );
            assert!(m.take(&peer(1)).is_some());
        }
        assert!(m.entries.queue.len() <= 8);
        // Filing past the cap forgets the oldest first.
        for n in 0..20 {
            m.file(peer(n), PeerMemory::with_next_mid(n), at(1000), 8);
        }
        assert_eq!(m.len(), 8);
        let kept: Vec<u16> = (0..20).filter(|&n| m.take(&peer(n)).is_some()).collect();
        assert_eq!(kept, (12..20).collect::<Vec<_>>());
    }

    #[test]
    fn filing_a_peer_again_replaces_its_entry() {
        let mut m = Memories::new((7, 8));
        m.file(peer(1), PeerMemory::with_next_mid(1), at(5), 10);
        m.file(peer(1), PeerMemory::with_next_mid(2), at(6), 10);
        assert_eq!(m.len(), 1);
        assert_eq!(m.take(&peer(1)).map(|p| p.next_mid()), Some(2));
        m.file(peer(2), PeerMemory::with_next_mid(3), at(7), 0);
        assert_eq!(m.len(), 0, "a cap of zero remembers nothing");
    }
}
