//! Message deduplication, RFC 7252 §4.5.
//!
//! A recipient must process a message only once however often it arrives, and must answer a
//! duplicate Confirmable message with the same ACK or RST. So each session remembers the
//! Message IDs it has seen, for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON), together with
//! the reply it sent, if any. The cache is capped per session; at the cap the oldest entry is
//! forgotten early, which only matters if a peer sends more than the cap within the lifetime.

use alloc::collections::{BTreeMap, VecDeque};

use crate::time::Instant;
use crate::transmit::Datagram;

#[derive(Debug)]
pub(crate) struct Entry {
    seq: u64,
    /// The ACK or RST sent for this message, re-sent verbatim for a duplicate CON.
    pub(crate) reply: Option<Datagram>,
}

#[derive(Debug, Default)]
pub(crate) struct Dedup {
    map: BTreeMap<u16, Entry>,
    /// Expiry order, one queue per lifetime so each queue is sorted by expiry.
    con: VecDeque<(Instant, u16, u64)>,
    non: VecDeque<(Instant, u16, u64)>,
    seq: u64,
}

impl Dedup {
    pub(crate) fn get(&self, mid: u16) -> Option<&Entry> {
        self.map.get(&mid)
    }

    pub(crate) fn insert(&mut self, mid: u16, confirmable: bool, expires: Instant, cap: usize) {
        while self.map.len() >= cap && self.evict_oldest() {}
        self.seq += 1;
        let seq = self.seq;
        self.map.insert(mid, Entry { seq, reply: None });
        let queue = if confirmable { &mut self.con } else { &mut self.non };
        queue.push_back((expires, mid, seq));
    }

    pub(crate) fn set_reply(&mut self, mid: u16, reply: Datagram) {
        if let Some(e) = self.map.get_mut(&mid) {
            e.reply = Some(reply);
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let take_con = match (self.con.front(), self.non.front()) {
            (Some(c), Some(n)) => c.2 < n.2,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        let queue = if take_con { &mut self.con } else { &mut self.non };
        if let Some((_, mid, seq)) = queue.pop_front() {
            Self::forget(&mut self.map, mid, seq);
        }
        true
    }

    fn forget(map: &mut BTreeMap<u16, Entry>, mid: u16, seq: u64) {
        // A Message ID re-used after eviction has a newer entry that must survive.
        if map.get(&mid).is_some_and(|e| e.seq == seq) {
            map.remove(&mid);
        }
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        for queue in [&mut self.con, &mut self.non] {
            while let Some(&(expires, mid, seq)) = queue.front() {
                if expires > now {
                    break;
                }
                queue.pop_front();
                Self::forget(&mut self.map, mid, seq);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_lifetime_then_forgets() {
        let mut d = Dedup::default();
        d.insert(7, true, Instant::from_secs(247), 16);
        d.insert(8, false, Instant::from_secs(145), 16);
        d.expire(Instant::from_secs(144));
        assert!(d.get(7).is_some() && d.get(8).is_some());
        d.expire(Instant::from_secs(145));
        assert!(d.get(8).is_none(), "NON entry must go at NON_LIFETIME");
        assert!(d.get(7).is_some());
        d.expire(Instant::from_secs(247));
        assert_eq!(d.len(), 0);
        assert_eq!(d.next_expiry(), None);
    }

    #[test]
    fn cap_evicts_oldest_first() {
        let mut d = Dedup::default();
        for mid in 0..4u16 {
            d.insert(mid, mid % 2 == 0, Instant::from_secs(100 + mid as u64), 3);
        }
        assert_eq!(d.len(), 3);
        assert!(d.get(0).is_none(), "oldest entry evicted");
        assert!(d.get(1).is_some() && d.get(3).is_some());
    }
}
