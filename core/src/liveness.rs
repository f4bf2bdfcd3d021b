//! Liveness: when a peer counts as alive, and when the engine must declare it dead.
//!
//! The contract (also in the crate docs): liveness is a property of what we *receive*. A
//! session remembers `last_heard`, the last time a valid message arrived from its peer. With a
//! keepalive of (`interval`, `timeout`), a ping is sent once the peer has been silent for
//! `interval`, and the session fails at `last_heard + interval + timeout` unless something is
//! heard first. Nothing we send, nothing that fails to send, no retransmission and no queue
//! can move `last_heard`, so nothing but the peer can postpone that deadline: the bug this
//! engine exists to make impossible is a keepalive whose timer is reset by its own failed
//! sends.

use crate::config::Keepalive;
use crate::time::Instant;
use alloc::boxed::Box;

#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    /// Boxed: most sessions of a server have none, and a session's every byte counts when
    /// a server holds a hundred thousand of them.
    keepalive: Option<Box<Keepalive>>,
    /// When keepalive was last set: silence before that was not under watch.
    watching_since: Instant,
    /// Last time a valid message was heard from the peer (the session's creation time until
    /// the first one arrives).
    last_heard: Instant,
    /// Whether anything at all has been heard yet.
    heard_once: bool,
}

impl Liveness {
    pub(crate) fn new(now: Instant, keepalive: Option<Keepalive>) -> Self {
        Liveness {
            keepalive: keepalive.map(Box::new),
            watching_since: now,
            last_heard: now,
            heard_once: false,
        }
    }

    /// A valid message arrived from the peer. Returns true the first time.
    pub(crate) fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = self.last_heard.max(now);
        !core::mem::replace(&mut self.heard_once, true)
    }

    pub(crate) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Silence is measured from the later of `now` and the last message heard (as
    /// `Endpoint::set_keepalive` documents), also when one keepalive replaces another: a
    /// shorter keepalive must not fail at once a peer that was only silent because the old one
    /// had not probed it yet.
    pub(crate) fn set_keepalive(&mut self, now: Instant, keepalive: Option<Keepalive>) {
        self.watching_since = now;
        self.keepalive = keepalive.map(Box::new);
    }

    pub(crate) fn keepalive(&self) -> Option<Keepalive> {
        self.keepalive.as_deref().copied()
    }

    fn silent_since(&self) -> Instant {
        self.last_heard.max(self.watching_since)
    }

    /// When a ping is due (if none is outstanding).
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        self.keepalive
            .as_deref()
            .map(|k| self.silent_since() + k.interval)
    }

    /// The deadline by which the peer must have been heard, or the session fails.
    pub(crate) fn fail_at(&self) -> Option<Instant> {
        self.keepalive
            .as_deref()
            .map(|k| self.silent_since() + k.bound())
    }
}
