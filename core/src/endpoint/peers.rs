//! Peer address → session slot (and, in a second table, → a remembered peer's entry).
//!
//! An open-addressing table (linear probing, at most half full, backward-shift deletion)
//! that stores only ids: the address each id stands for is looked up where the id points
//! (a session's own `peer`), so an entry costs 4 bytes (8 to 16 with the free half) where a
//! `BTreeMap<SocketAddr, u32>` spent 60 to 80 on its nodes. Addresses are hashed with
//! SipHash under a key from the endpoint's seed, so peers that pick their addresses cannot
//! aim them at one bucket. The ids' owner is reached through [`Addresses`] as a trait
//! object, so that both tables share one copy of the code.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::Hasher;
use core::net::SocketAddr;

use crate::session::Session;

const EMPTY: u32 = u32::MAX;

/// What a table's ids stand for: the address filed under `id`, if it is in use.
pub(crate) trait Addresses {
    fn address(&self, id: u32) -> Option<&SocketAddr>;
}

impl Addresses for Vec<Option<Box<Session>>> {
    fn address(&self, slot: u32) -> Option<&SocketAddr> {
        self.get(slot as usize)
            .and_then(Option::as_deref)
            .map(|s| &s.peer)
    }
}

pub(crate) struct PeerIndex {
    buckets: Vec<u32>,
    len: usize,
    keys: (u64, u64),
}

type Sessions = dyn Addresses;

fn peer_of(sessions: &Sessions, slot: u32) -> Option<&SocketAddr> {
    sessions.address(slot)
}

impl PeerIndex {
    pub(crate) fn new(keys: (u64, u64)) -> Self {
        PeerIndex {
            buckets: Vec::new(),
            len: 0,
            keys,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, peer: &SocketAddr) -> usize {
        // The address's bytes in one write: `SocketAddr`'s own `Hash` writes each field apart
        // (with length prefixes and the IPv6 flow label and scope), which costs more code and
        // time. Equal addresses still hash alike, which is all a hash table needs.
        let mut bytes = [0u8; 19];
        let (family, port) = match peer {
            SocketAddr::V4(a) => {
                bytes[1..5].copy_from_slice(&a.ip().octets());
                (4, a.port())
            }
            SocketAddr::V6(a) => {
                bytes[1..17].copy_from_slice(&a.ip().octets());
                (6, a.port())
            }
        };
        bytes[0] = family;
        bytes[17..].copy_from_slice(&port.to_be_bytes());
        #[allow(deprecated)] // core's SipHash-2-4: keyed, and all that no_std offers.
        let mut h = core::hash::SipHasher::new_with_keys(self.keys.0, self.keys.1);
        h.write(&bytes);
        h.finish() as usize & (self.buckets.len() - 1)
    }

    /// The bucket holding `peer`'s slot.
    fn find(&self, peer: &SocketAddr, sessions: &Sessions) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(peer);
        loop {
            let slot = *self.buckets.get(i)?;
            if slot == EMPTY {
                return None;
            }
            if peer_of(sessions, slot) == Some(peer) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn get(&self, peer: &SocketAddr, sessions: &Sessions) -> Option<u32> {
        self.find(peer, sessions).map(|i| self.buckets[i])
    }

    /// Files `slot` under its session's peer, which must not be filed yet.
    pub(crate) fn insert(&mut self, slot: u32, sessions: &Sessions) {
        let Some(peer) = peer_of(sessions, slot) else {
            return;
        };
        debug_assert!(self.find(peer, sessions).is_none());
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(sessions);
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(peer);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.buckets[i] = slot;
        self.len += 1;
    }

    /// Removes `peer`, filed as `slot`. Call while `sessions` still has every other filed
    /// session in place (the entries after the hole are re-homed by their peers).
    pub(crate) fn remove(&mut self, peer: &SocketAddr, slot: u32, sessions: &Sessions) {
        if self.buckets.is_empty() {
            return;
        }
        let mask = self.buckets.len() - 1;
        let mut hole = self.home(peer);
        loop {
            match self.buckets[hole] {
                EMPTY => return,
                s if s == slot => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let moved = self.buckets[j];
            if moved == EMPTY {
                break;
            }
            let Some(home) = peer_of(sessions, moved).map(|p| self.home(p)) else {
                continue;
            };
            // Move the entry back into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = moved;
                self.buckets[j] = EMPTY;
                hole = j;
            }
        }
        if self.len == 0 {
            self.buckets = Vec::new();
        }
    }

    fn grow(&mut self, sessions: &Sessions) {
        let cap = (self.buckets.len() * 2).max(4);
        let old = core::mem::replace(&mut self.buckets, alloc::vec![EMPTY; cap]);
        self.len = 0;
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            self.insert(slot, sessions);
        }
    }
}
