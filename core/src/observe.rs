//! Observing resources (RFC 7641): the Observe option, the freshness rule for notifications,
//! and the server's registry of which sessions observe which resource.
//!
//! The per-observation state lives in the sessions (a client's observation is one of its
//! exchanges, a server's observer belongs to the session of the client), so failing or
//! closing a session ends its observations with it. The [`Registry`] only indexes them by
//! resource so that a notification reaches every observer without a scan of all sessions.

use alloc::vec::Vec;
use core::fmt;

use crate::outputs::SessionKey;
use crate::time::{Duration, Instant};

/// The Observe option number (RFC 7641 §2).
pub(crate) const OBSERVE: u16 = 6;
/// The Max-Age option number (RFC 7252 §5.10.5).
pub(crate) const MAX_AGE: u16 = 14;
/// Max-Age when the option is absent (RFC 7252 §5.10.5).
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// How long after Max-Age lapses without a fresh notification a client re-registers
/// (RFC 7641 §3.3.1 asks for "some margin" for the notification's travel and the server's
/// processing).
pub(crate) const REREGISTER_MARGIN: Duration = Duration::from_secs(5);
/// A server sends a Confirmable notification at least this often to each observer, so that a
/// client that went away is eventually noticed even without keepalive (RFC 7641 §4.5).
pub(crate) const CON_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The window after which a notification counts as newer whatever its sequence number
/// (RFC 7641 §3.4).
const FRESHNESS_WINDOW: Duration = Duration::from_secs(128);

/// A resource the application makes observable, named by the application: any number it
/// maps to its resources (a path's index, a hash, a database key). The engine only compares
/// them.
///
/// ```
/// use coap_engine::ResourceId;
/// const TIME: ResourceId = ResourceId(1);
/// assert_ne!(TIME, ResourceId(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(pub u64);

/// Why a server removed an observer (see [`Event::ObserverRemoved`](crate::Event::ObserverRemoved)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserverRemoval {
    /// The client rejected a notification with Reset (RFC 7641 §3.6, §4.5).
    Reset,
    /// The client sent a GET with Observe = 1 (RFC 7641 §3.6).
    Deregistered,
    /// A Confirmable notification was never acknowledged (RFC 7641 §4.5).
    NotAcknowledged,
    /// The client registered the same token for another resource (RFC 7641 §4.1).
    Replaced,
    /// The application sent a notification that is not 2.xx, which ends every observation of
    /// the resource (RFC 7641 §3.2, §4.2).
    ErrorResponse,
    /// The client's session failed (e.g. keepalive) or was closed.
    SessionEnded,
}

impl fmt::Display for ObserverRemoval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObserverRemoval::Reset => "the client answered a notification with Reset",
            ObserverRemoval::Deregistered => "the client deregistered",
            ObserverRemoval::NotAcknowledged => "a confirmable notification was not acknowledged",
            ObserverRemoval::Replaced => "the client re-used the token for another resource",
            ObserverRemoval::ErrorResponse => "the resource sent an error response",
            ObserverRemoval::SessionEnded => "the client's session ended",
        })
    }
}

/// The value of an Observe option: a 0–3 byte unsigned integer (RFC 7641 §2). `None` for a
/// longer value, which a receiver must treat as if the option were absent.
pub(crate) fn value(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 3 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | b as u32))
}

/// Max-Age of a response (RFC 7252 §5.10.5): a 0–4 byte unsigned integer of seconds.
pub(crate) fn max_age(option: Option<&[u8]>) -> Duration {
    match option {
        Some(bytes) if bytes.len() <= 4 => {
            Duration::from_secs(bytes.iter().fold(0u64, |v, &b| (v << 8) | b as u64))
        }
        _ => DEFAULT_MAX_AGE,
    }
}

/// RFC 7641 §3.4: is a notification with sequence number `v2`, received at `t2`, newer than
/// the one with `v1` received at `t1`? Sequence numbers are 24-bit and wrap.
pub(crate) fn fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + FRESHNESS_WINDOW
}

/// A client's state for one of its observations (kept on its exchange).
#[derive(Debug)]
pub(crate) struct Observation {
    /// The registration request, re-sent (with a new Message ID) to re-register, and with
    /// Observe = 1 to deregister.
    pub(crate) request: coap_lite::Packet,
    /// Sequence number and arrival of the newest notification delivered.
    pub(crate) last: Option<(u32, Instant)>,
    /// When to re-register if no fresh notification arrives first.
    pub(crate) reregister_at: Option<Instant>,
    /// The application asked to deregister: notifications are no longer delivered, and the
    /// answer to the deregistration ends the exchange.
    pub(crate) deregistering: bool,
}

/// Remembers a few Message IDs of the notifications sent to one observer, so that a Reset to
/// any of them (they may cross on the wire) removes the observer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecentMids {
    mids: [u16; 4],
    len: u8,
    next: u8,
}

impl RecentMids {
    pub(crate) fn push(&mut self, mid: u16) {
        self.mids[self.next as usize] = mid;
        self.next = (self.next + 1) % 4;
        self.len = (self.len + 1).min(4);
    }

    pub(crate) fn contains(&self, mid: u16) -> bool {
        self.mids[..self.len as usize].contains(&mid)
    }
}

/// A server's record of one client observing one of its resources (kept on the client's
/// session; the entry is the pair of that endpoint and the token, RFC 7641 §4.1).
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) resource: ResourceId,
    pub(crate) token: crate::session::Token,
    /// Last time the client confirmed interest: the registration, or an acknowledged
    /// Confirmable notification. A Confirmable notification is due `CON_INTERVAL` after it.
    pub(crate) confirmed: Instant,
    pub(crate) recent: RecentMids,
}

/// Which sessions observe each resource, plus the sequence number source.
///
/// One counter serves every resource: it only increases, so the numbers a client sees for one
/// resource keep increasing even when the resource's last observer left and a new one came
/// (a per-resource counter would restart and a re-registering client would judge fresh
/// notifications stale for 128 s). It is 24 bits wide and wraps, which RFC 7641 §3.4's rule
/// expects.
///
/// The index is one sorted list of (resource, session) pairs, a session once per observation
/// (so once per token): a resource's observers are a contiguous run found by binary search.
/// Registrations and departures move the entries after them, which a tree would not, but
/// they are rare next to notifications, and a tree's code is several times the size on a
/// microcontroller.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    seq: u32,
    /// Without feature `observe` there are no observers, and nothing to index.
    #[cfg(feature = "observe")]
    entries: Vec<(ResourceId, SessionKey)>,
}

#[cfg(feature = "observe")]
fn order(entry: &(ResourceId, SessionKey)) -> (ResourceId, u32, u32) {
    (entry.0, entry.1.slot, entry.1.generation)
}

impl Registry {
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0xFF_FFFF;
        self.seq
    }

    /// The run of `resource`'s entries.
    #[cfg(feature = "observe")]
    fn run(&self, resource: ResourceId) -> core::ops::Range<usize> {
        let start = self.entries.partition_point(|e| e.0 < resource);
        let len = self.entries[start..].partition_point(|e| e.0 == resource);
        start..start + len
    }

    pub(crate) fn add(&mut self, resource: ResourceId, key: SessionKey) {
        #[cfg(feature = "observe")]
        {
            let entry = (resource, key);
            let at = self.entries.partition_point(|e| order(e) < order(&entry));
            self.entries.insert(at, entry);
        }
        #[cfg(not(feature = "observe"))]
        let _ = (resource, key);
    }

    pub(crate) fn remove(&mut self, resource: ResourceId, key: SessionKey) {
        #[cfg(feature = "observe")]
        {
            if let Some(i) = self.entries.iter().position(|e| *e == (resource, key)) {
                self.entries.remove(i);
            }
            if self.entries.is_empty() {
                self.entries = Vec::new();
            }
        }
        #[cfg(not(feature = "observe"))]
        let _ = (resource, key);
    }

    pub(crate) fn count(&self, resource: ResourceId) -> usize {
        #[cfg(feature = "observe")]
        return self.run(resource).len();
        #[cfg(not(feature = "observe"))]
        {
            let _ = resource;
            0
        }
    }

    /// The sessions observing `resource`, each once.
    #[cfg(feature = "observe")]
    pub(crate) fn sessions(&self, resource: ResourceId) -> Vec<SessionKey> {
        let mut keys: Vec<SessionKey> = self.entries[self.run(resource)]
            .iter()
            .map(|e| e.1)
            .collect();
        keys.dedup(); // a session observing with several tokens is filed once per token
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_values() {
        assert_eq!(value(b""), Some(0));
        assert_eq!(value(&[1]), Some(1));
        assert_eq!(value(&[0xFF, 0xFF, 0xFF]), Some(0xFF_FFFF));
        assert_eq!(value(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn max_age_values() {
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
        assert_eq!(max_age(Some(b"")), Duration::ZERO);
        assert_eq!(max_age(Some(&[1, 0])), Duration::from_secs(256));
        assert_eq!(max_age(Some(&[1, 0, 0, 0, 0])), DEFAULT_MAX_AGE);
    }

    #[test]
    fn freshness_rule_of_rfc7641_section_3_4() {
        let t = Instant::from_secs(1000);
        assert!(fresh(5, t, 6, t));
        assert!(!fresh(6, t, 5, t));
        assert!(!fresh(6, t, 6, t));
        // Wrap-around: 0xFFFFFF then 1 is newer; the reverse is older.
        assert!(fresh(0xFF_FFFF, t, 1, t));
        assert!(!fresh(1, t, 0xFF_FFFF, t));
        // Exactly half the space apart counts as older either way.
        assert!(!fresh(0, t, 1 << 23, t));
        // After 128 s anything is newer.
        assert!(!fresh(6, t, 5, t + Duration::from_secs(128)));
        assert!(fresh(6, t, 5, t + Duration::from_secs(129)));
    }

    #[test]
    fn recent_mids_keep_the_last_four() {
        let mut r = RecentMids::default();
        assert!(!r.contains(0));
        for mid in 10..16 {
            r.push(mid);
        }
        assert!(!r.contains(11));
        assert!((12..16).all(|m| r.contains(m)));
    }

    #[test]
    #[cfg(feature = "observe")]
    fn registry_files_each_resources_observers_together() {
        let key = |slot| SessionKey {
            slot,
            generation: 1,
        };
        let mut reg = Registry::default();
        for (r, slot) in [(5, 3), (1, 9), (5, 1), (3, 3), (5, 7), (5, 1)] {
            reg.add(ResourceId(r), key(slot));
        }
        assert_eq!(reg.count(ResourceId(5)), 4);
        assert_eq!(reg.sessions(ResourceId(5)), [key(1), key(3), key(7)]);
        assert_eq!(reg.sessions(ResourceId(1)), [key(9)]);
        assert_eq!(reg.count(ResourceId(2)), 0);
        assert!(reg.sessions(ResourceId(6)).is_empty());
        reg.remove(ResourceId(5), key(3));
        reg.remove(ResourceId(5), key(2)); // not filed: nothing changes
        assert_eq!(reg.sessions(ResourceId(5)), [key(1), key(7)]);
        assert_eq!(
            reg.count(ResourceId(3)),
            1,
            "another resource's entry stays"
        );
        for (r, slot) in [(1, 9), (5, 1), (3, 3), (5, 7), (5, 1)] {
            reg.remove(ResourceId(r), key(slot));
        }
        assert!(reg.entries.is_empty());
    }

    #[test]
    #[cfg(feature = "observe")]
    fn registry_counts_and_wraps() {
        let mut reg = Registry::default();
        let a = SessionKey {
            slot: 1,
            generation: 0,
        };
        let r = ResourceId(7);
        reg.add(r, a);
        reg.add(r, a);
        assert_eq!(reg.count(r), 2);
        assert_eq!(reg.sessions(r).len(), 1);
        reg.remove(r, a);
        reg.remove(r, a);
        assert_eq!(reg.count(r), 0);
        reg.seq = 0xFF_FFFF;
        assert_eq!(reg.next_seq(), 0);
    }
}
