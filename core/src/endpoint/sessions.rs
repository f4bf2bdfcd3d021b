//! The session table: slots and their generations, lookup by peer, creation and ending,
//! the timers of every session, and the memory of ended sessions kept for
//! EXCHANGE_LIFETIME.

use alloc::boxed::Box;
use core::cmp::Reverse;
use core::net::SocketAddr;

use coap_lite::MessageType;

use super::Endpoint;
use crate::error::Error;
use crate::event::{CloseReason, Event};
use crate::outputs::{Ctx, SessionKey, TransmitRecord};
use crate::security::SecureChannel;
use crate::session::{Ending, Origin, Session};
use crate::time::Instant;

impl Endpoint {
    /// Moves time forward (never back) and runs every session timer that is due.
    pub(super) fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.max(now);
        self.now = now;
        // Each due session runs once per call, so a buggy deadline can never spin here.
        let mut due = core::mem::take(&mut self.due);
        while let Some(&Reverse((t, slot))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(Some(s)) = self.sessions.get_mut(slot as usize) {
                if s.armed == Some(t) {
                    s.armed = None;
                    due.push(slot);
                }
            }
        }
        for &slot in &due {
            let (session, mut ctx) = self.split(slot);
            match session.and_then(|s| s.on_timeout(now, &mut ctx)) {
                Some(ending) => self.end_session(slot, ending),
                None => self.rearm(slot),
            }
        }
        due.clear();
        self.due = due;
        #[cfg(feature = "security")]
        self.run_handshake_timers(now);
        self.memory.expire(now);
        now
    }

    pub(super) fn lookup(&mut self, peer: SocketAddr) -> Option<u32> {
        if let Some((p, slot)) = self.last_peer {
            if p == peer {
                return Some(slot);
            }
        }
        let slot = self.by_peer.get(&peer, &self.sessions)?;
        self.last_peer = Some((peer, slot));
        Some(slot)
    }

    pub(super) fn split(&mut self, slot: u32) -> (Option<&mut Session>, Ctx<'_>) {
        let session = self
            .sessions
            .get_mut(slot as usize)
            .and_then(Option::as_deref_mut);
        let max_message_size = session
            .as_deref()
            .map_or(self.config.max_message_size, |s| s.send_limit(&self.config));
        let path = session
            .as_deref()
            .map_or_else(Default::default, |s| s.block_path(&self.config));
        let ctx = Ctx {
            config: &self.config,
            derived: &self.derived,
            rng: &mut self.rng,
            out: &mut self.out,
            next_id: &mut self.next_id,
            observe: &mut self.observe,
            max_message_size,
            path,
        };
        (session, ctx)
    }

    /// A session we open, for an application call to `peer`: a secure endpoint's association
    /// checks the server's certificate against `server_name` (or else the peer's address).
    /// Nothing goes out until the call is accepted ([`after_local_call`](Self::after_local_call)).
    pub(super) fn create_local_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<alloc::string::String>,
    ) -> Result<u32, Error> {
        #[cfg(feature = "security")]
        let channel = self.connect(now, peer, server_name.as_deref())?;
        #[cfg(not(feature = "security"))]
        let channel = {
            let _ = server_name;
            None
        };
        self.create_session(now, peer, Origin::Local, channel)
    }

    pub(super) fn create_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        origin: Origin,
        channel: Option<Box<dyn SecureChannel>>,
    ) -> Result<u32, Error> {
        if self.by_peer.len() >= self.config.limits.max_sessions {
            return Err(Error::SessionLimit);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.sessions.push(None);
                self.generations.push(0);
                (self.sessions.len() - 1) as u32
            }
        };
        let key = SessionKey {
            slot,
            generation: self.generations[slot as usize],
        };
        let memory = self.memory.restore(&peer, now, &mut self.out.pool);
        // Message IDs and deduplication belong to one association (RFC 7252 §9.1): a new
        // secure session starts afresh.
        let memory = memory.filter(|_| channel.is_none());
        let (_, mut ctx) = self.split(slot);
        let session = Session::new(peer, key, origin, now, &mut ctx, memory, channel);
        self.sessions[slot as usize] = Some(Box::new(session));
        self.by_peer.insert(slot, &self.sessions);
        Ok(slot)
    }

    /// Runs an application call on the session with `peer`, opening one if needed.
    pub(super) fn with_local_session<T>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<alloc::string::String>,
        call: impl FnOnce(&mut Session, &mut Ctx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (slot, fresh) = match self.lookup(peer) {
            Some(slot) => (slot, false),
            None => (self.create_local_session(now, peer, server_name)?, true),
        };
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownSession)
            .and_then(|s| call(s, &mut ctx));
        self.after_local_call(now, slot, fresh, peer, result.is_ok());
        result
    }

    /// A session opened for an application call is announced, and its connection or
    /// handshake started, only if the call succeeded; otherwise it is discarded as if never
    /// made, and nothing about it went out.
    pub(super) fn after_local_call(
        &mut self,
        now: Instant,
        slot: u32,
        fresh: bool,
        peer: SocketAddr,
        ok: bool,
    ) {
        if fresh && !ok {
            // The session may hold a returning peer's memory; keep that, announce nothing.
            if let Some(session) = self.free_slot(slot) {
                self.remember(session);
            }
            return;
        }
        if fresh {
            self.out.event(Event::SessionNew { peer });
            if cfg!(feature = "tcp") && self.config.transport == crate::config::Transport::Tcp {
                // A secure connection's handshake starts once it is open.
                self.out
                    .command(crate::outputs::StreamCommand::Connect(peer));
            } else {
                #[cfg(feature = "security")]
                self.start_handshake(now, slot);
            }
        }
        #[cfg(not(feature = "security"))]
        let _ = now;
        self.rearm(slot);
    }

    fn free_slot(&mut self, slot: u32) -> Option<Session> {
        let session = self.sessions.get_mut(slot as usize)?.take()?;
        self.by_peer.remove(&session.peer, slot, &self.sessions);
        if self.last_peer.is_some_and(|(_, s)| s == slot) {
            self.last_peer = None;
        }
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.tidy_timers(); // its entry may be on top
        Some(*session)
    }

    pub(super) fn end_session(&mut self, slot: u32, ending: Ending) {
        if let Some(mut session) = self.free_slot(slot) {
            let (_, mut ctx) = self.split(slot);
            let on_purpose = matches!(
                ending,
                Ending::Closed(CloseReason::Local | CloseReason::Idle)
            );
            // A connection we end on purpose is released in order (RFC 8323 §5.5).
            if on_purpose && session.reliable() {
                session.release(&mut ctx);
            }
            #[cfg(feature = "security")]
            if on_purpose {
                session.close_channel(&mut ctx);
            }
            session.terminate(&mut ctx, ending);
            if session.reliable() {
                self.close_connection(session.peer, ending);
                return; // nothing to remember: no Message IDs on a stream
            }
            // Message IDs and deduplication belong to one association (RFC 7252 §9.1).
            if !session.is_secure() {
                self.remember(session);
            }
        }
    }

    fn remember(&mut self, session: Session) {
        let expires = self.now + self.derived.exchange_lifetime;
        let cap = self.config.limits.max_remembered_peers;
        self.memory
            .file(session.peer, session.into_memory(), expires, cap);
    }

    pub(super) fn rearm(&mut self, slot: u32) {
        let Some(Some(s)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        #[cfg(feature = "security")]
        if let Some(ending) = s.doomed.take() {
            self.end_session(slot, *ending);
            return;
        }
        s.trim(self.now);
        let next = s.next_deadline(&self.config);
        // Lazy re-arming: a deadline that moves later (or goes away) leaves the earlier entry
        // filed; when it fires, the session finds nothing due and is filed again under its real
        // deadline. Only a deadline that moves earlier touches the timer heap, so the common
        // request/response cycle (deadline set, then cleared) costs no tree operations. A
        // deadline is never late; at worst the adapter wakes once for nothing.
        match (s.armed, next) {
            (Some(old), Some(t)) if old <= t => {}
            (Some(_), None) | (None, None) => {}
            (_, Some(t)) => {
                // The entry under the old deadline, if any, is stale from now on.
                s.armed = Some(t);
                self.timers.push(Reverse((t, slot)));
                self.tidy_timers();
            }
        }
    }

    /// Keeps the timer heap's invariants: no stale entry on top, and no more stale entries
    /// than live ones (plus a few), so its size stays bounded by the sessions'.
    fn tidy_timers(&mut self) {
        if self.timers.len() > 2 * self.by_peer.len() + 16 {
            // Refiled from the sessions themselves, which takes less code than sifting out the
            // heap's stale entries; at least as many pushes made them, so the cost is shared.
            self.timers.clear();
            for (slot, s) in self.sessions.iter().enumerate() {
                if let Some(t) = s.as_ref().and_then(|s| s.armed) {
                    self.timers.push(Reverse((t, slot as u32)));
                }
            }
        }
        let sessions = &self.sessions;
        let live = |&Reverse((t, slot)): &Reverse<(Instant, u32)>| matches!(sessions.get(slot as usize), Some(Some(s)) if s.armed == Some(t));
        while self.timers.peek().is_some_and(|e| !live(e)) {
            self.timers.pop();
        }
    }

    pub(super) fn stateless_reset(&mut self, peer: SocketAddr, slot: Option<u32>, mid: u16) {
        let session = slot.map(|slot| SessionKey {
            slot,
            generation: self.generations[slot as usize],
        });
        let rst = self.out.encode_empty(MessageType::Reset, mid);
        self.out.send(
            TransmitRecord {
                peer,
                session,
                message_id: Some(mid),
            },
            rst,
        );
    }
}
