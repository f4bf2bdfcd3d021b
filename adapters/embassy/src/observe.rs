//! Observe (RFC 7641) on the handles, feature `observe` (on by default): [`Client::observe`]
//! and its [`Observation`], and the server's [`Server::respond_observe`],
//! [`Server::notify`], [`Server::observers`] and [`Server::next_observer_removed`]. Without
//! the feature none of this is compiled, and a firmware that does not observe does not carry
//! the engine's observe calls (about 10 KB of `.text` on a Cortex-M4F).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::net::SocketAddr;

use coap_engine::coap_lite::Packet;
use coap_engine::{Endpoint, IncomingRequestId, ObserverRemoval, RequestId, ResourceId};
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::signal::Signal;

use crate::{call, now, Client, CoapChannels, Command, Outcome, Reply, RequestError, Server};

/// What one observation shares between its [`Observation`] handle and the runner: each
/// signal holds at most one value, so an observation costs the same however slowly its
/// handle is read.
pub(crate) struct ObserveSlot<M: RawMutex> {
    /// The engine's id for it, or why the engine refused it.
    started: Signal<M, Result<RequestId, coap_engine::Error>>,
    /// The freshest notification not yet taken (a newer one replaces it).
    notification: Signal<M, Packet>,
    /// How the observation ended.
    end: Signal<M, Result<Packet, RequestError>>,
}

/// The observe calls from the handles to the runner.
pub(crate) enum ObserveCommand<M: RawMutex> {
    Register(SocketAddr, Packet, Arc<ObserveSlot<M>>),
    Deregister(RequestId),
    Cancel(RequestId),
    /// The handle was dropped.
    Forget(RequestId),
    Respond(IncomingRequestId, ResourceId, Packet, Reply<M>),
    Notify(ResourceId, Packet, bool, Reply<M>),
    Observers(ResourceId, Reply<M>),
}

impl<'a, M: RawMutex, const N: usize> Client<'a, M, N> {
    /// Observes a resource (RFC 7641): sends `request` (a GET or FETCH; the engine sets
    /// Observe = 0, register) to `peer` and returns as soon as the engine has taken it, or
    /// with [`RequestError::Rejected`] (e.g. [`NotObservable`](coap_engine::Error::NotObservable)
    /// for another method) if it refused. Read the notifications, the registration's first
    /// 2.xx response included, and how the observation ends with [`Observation::next`].
    ///
    /// The engine drops reordered, stale notifications (RFC 7641 §3.4) and re-registers when
    /// Max-Age passes without one (§3.3.1). Dropping this future before it resolves ends a
    /// registration already queued as dropping an [`Observation`] does.
    ///
    /// ```no_run
    /// # async fn demo(client: coap_engine_embassy::Client<'_, embassy_sync::blocking_mutex::raw::NoopRawMutex, 4>) {
    /// use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    /// use coap_engine_embassy::Observed;
    ///
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// get.add_option(CoapOption::UriPath, b"temperature".to_vec());
    /// let peer = "192.0.2.1:5683".parse().unwrap();
    /// let mut observation = client.observe(peer, get).await.unwrap();
    /// for _ in 0..3 {
    ///     match observation.next().await {
    ///         Ok(Observed::Notification(n)) => { /* the current state: n.payload */ }
    ///         Ok(Observed::Response(last)) => return, // the server ended it (e.g. 4.04)
    ///         Err(e) => return,                       // timeout, reset, session failure, ...
    ///     }
    /// }
    /// // Done: tell the server (RFC 7641 §3.6) and take its answer.
    /// let answer = observation.deregister().await;
    /// # }
    /// ```
    pub async fn observe(
        &self,
        peer: SocketAddr,
        request: Packet,
    ) -> Result<Observation<'a, M, N>, RequestError> {
        let slot = Arc::new(ObserveSlot {
            started: Signal::new(),
            notification: Signal::new(),
            end: Signal::new(),
        });
        let command = Command::Observe(ObserveCommand::Register(peer, request, slot.clone()));
        self.channels.commands.send(command).await;
        let id = slot.started.wait().await?;
        Ok(Observation {
            channels: self.channels,
            id,
            slot,
            end: None,
        })
    }
}

/// What [`Observation::next`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A notification (RFC 7641 §4.2): the resource's current state. More may follow.
    Notification(Packet),
    /// The response that ended the observation: one without Observe or not 2.xx (the server
    /// would not, or no longer will, notify, e.g. 4.04 after a DELETE), or the server's
    /// answer to [`Observation::deregister`]. Nothing follows.
    Response(Packet),
}

/// One observation from [`Client::observe`]: its notifications, then exactly one end, a
/// terminal response ([`Observed::Response`]) or a terminal error.
///
/// **Bounded memory.** Notifications are state, not a log: the runner keeps only the
/// freshest one not yet taken by [`next`](Self::next), replacing it when a newer one
/// arrives, so a slow reader skips intermediate states and neither blocks the runner nor
/// grows memory. Each observation holds at most one notification and its end.
///
/// **Dropping** it ends the observation without waiting: it is deregistered (as
/// [`deregister`](Self::deregister) does, RFC 7641 §3.6), so the server stops notifying at
/// once, over UDP and TCP alike (TCP has no Reset that could tell it later, RFC 8323), as
/// the other adapters do; if the engine cannot send a deregistration now, it is cancelled
/// locally (as [`cancel`](Self::cancel) does, and over UDP the server learns of it when its
/// next notification is answered with Reset). `drop` cannot await, so it queues this on the
/// command channel with `try_send`. If that channel is full at that moment, the runner
/// notices that the handle is gone when the next notification arrives and ends the
/// observation then; until then the observation holds its engine exchange, and nothing else.
pub struct Observation<'a, M: RawMutex, const N: usize> {
    channels: &'a CoapChannels<M, N>,
    id: RequestId,
    slot: Arc<ObserveSlot<M>>,
    /// The end, once [`next`](Self::next) has returned it.
    end: Option<Result<Packet, RequestError>>,
}

impl<M: RawMutex, const N: usize> Observation<'_, M, N> {
    /// The engine's id for this observation, for logging.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next notification or, once the observation is over, its end:
    /// `Ok(`[`Observed::Response`]`)` or `Err` (timeout, Reset, session failure or close,
    /// cancel, see [`RequestError`]). A notification that arrived before the end is still
    /// returned first. After the end, every call returns the end again.
    ///
    /// Cancel-safe: a `next` future dropped before it is ready (a `select` with a timer)
    /// takes nothing, and the following call sees what it would have.
    pub async fn next(&mut self) -> Result<Observed, RequestError> {
        if let Some(end) = &self.end {
            return end.clone().map(Observed::Response);
        }
        let slot = &self.slot;
        // Polled first: a notification that came before the end is not lost behind it.
        let end = match select(slot.notification.wait(), slot.end.wait()).await {
            Either::First(notification) => return Ok(Observed::Notification(notification)),
            Either::Second(end) => end,
        };
        self.end = Some(end.clone());
        end.map(Observed::Response)
    }

    /// Whether [`next`](Self::next) has returned the end.
    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// Ends the observation by deregistering (RFC 7641 §3.6: a GET with Observe = 1), and
    /// returns the server's answer (normally a 2.05 without Observe), or the error that ended
    /// the exchange if none came. Notifications still arriving are acknowledged but not
    /// delivered. If the observation had already ended, returns how it ended. If the engine
    /// cannot send the deregistration now (its queue limits), the observation is cancelled
    /// instead, as by [`cancel`](Self::cancel).
    pub async fn deregister(mut self) -> Result<Packet, RequestError> {
        if !self.is_over() {
            let command = Command::Observe(ObserveCommand::Deregister(self.id));
            self.channels.commands.send(command).await;
        }
        self.finish().await
    }

    /// Ends the observation without telling the server: over UDP its next notification is
    /// answered with Reset (RFC 7641 §3.6), which removes us; over TCP, which has no Reset
    /// for it, the server notifies in vain until the session ends, so prefer
    /// [`deregister`](Self::deregister) there. Returns how it ended: normally
    /// `Err(`[`RequestError::Exchange`]`(`[`ExchangeError::Cancelled`](coap_engine::ExchangeError::Cancelled)`))`,
    /// or its earlier end if it had already ended.
    pub async fn cancel(mut self) -> Result<Packet, RequestError> {
        if !self.is_over() {
            let command = Command::Observe(ObserveCommand::Cancel(self.id));
            self.channels.commands.send(command).await;
        }
        self.finish().await
    }

    /// Whether the end has come (taken or not).
    fn is_over(&self) -> bool {
        self.end.is_some() || self.slot.end.signaled()
    }

    /// Skips notifications until the end.
    async fn finish(&mut self) -> Result<Packet, RequestError> {
        loop {
            match self.next().await {
                Ok(Observed::Notification(_)) => {}
                Ok(Observed::Response(p)) => return Ok(p),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<M: RawMutex, const N: usize> Drop for Observation<'_, M, N> {
    fn drop(&mut self) {
        if !self.is_over() {
            // Full: the runner ends it at its next notification (see the type's docs).
            let command = Command::Observe(ObserveCommand::Forget(self.id));
            let _ = self.channels.commands.try_send(command);
        }
    }
}

/// A client that stopped observing one of our resources (from
/// [`Server::next_observer_removed`]; the engine's
/// [`Event::ObserverRemoved`](coap_engine::Event::ObserverRemoved)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverRemoved {
    /// The client.
    pub peer: SocketAddr,
    /// The resource it observed.
    pub resource: ResourceId,
    /// Why it was removed.
    pub reason: ObserverRemoval,
}

impl<M: RawMutex, const N: usize> Server<'_, M, N> {
    /// Answers request `id` like [`respond`](Self::respond) and, if it is a registration (a
    /// GET or FETCH with Observe = 0, RFC 7641 §3.1) and `response` is 2.xx, adds its sender
    /// as an observer of `resource` (a number of your choosing): the response carries
    /// Observe, and [`notify`](Self::notify) reaches the client from then on. Returns whether
    /// the observer was added; not when the request was no registration, the response is not
    /// 2.xx, or the engine's observer limits are reached (the response then goes without
    /// Observe, which tells the client). Fails for an unknown `id` or a `response` that is no
    /// response. Observers leave as [`next_observer_removed`](Self::next_observer_removed)
    /// reports.
    ///
    /// ```no_run
    /// # async fn demo(server: coap_engine_embassy::Server<'_, embassy_sync::blocking_mutex::raw::NoopRawMutex, 4>) {
    /// use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
    /// use coap_engine::ResourceId;
    ///
    /// const TEMPERATURE: ResourceId = ResourceId(1);
    /// let incoming = server.next_request().await;
    /// let mut state = Packet::new();
    /// state.header.code = MessageClass::Response(ResponseType::Content);
    /// state.payload = b"21.5".to_vec();
    /// server.respond_observe(incoming.id, TEMPERATURE, state.clone()).await.unwrap();
    /// // Later, when the temperature changes:
    /// state.payload = b"22.0".to_vec();
    /// let observers = server.notify(TEMPERATURE, state, false).await.unwrap();
    /// # }
    /// ```
    pub async fn respond_observe(
        &self,
        id: IncomingRequestId,
        resource: ResourceId,
        response: Packet,
    ) -> Result<bool, coap_engine::Error> {
        let command = |r| Command::Observe(ObserveCommand::Respond(id, resource, response, r));
        match call(self.channels, command).await {
            Outcome::Observing(result) => result,
            _ => unreachable!("the runner answers respond_observe with its result"),
        }
    }

    /// Sends `notification` (a response: code, options, payload; the engine sets type,
    /// Message ID, token and the Observe sequence number) to every observer of `resource`
    /// and returns how many there were (RFC 7641 §4.2). Non-confirmable unless `confirmable`
    /// (the engine still makes one Confirmable at least every 24 hours, and while an earlier
    /// Confirmable one is unacknowledged). A notification that is not 2.xx is the last: it
    /// ends every observation of `resource`.
    pub async fn notify(
        &self,
        resource: ResourceId,
        notification: Packet,
        confirmable: bool,
    ) -> Result<usize, coap_engine::Error> {
        let command = |r| {
            Command::Observe(ObserveCommand::Notify(
                resource,
                notification,
                confirmable,
                r,
            ))
        };
        match call(self.channels, command).await {
            Outcome::Notified(result) => result,
            _ => unreachable!("the runner answers notify with its result"),
        }
    }

    /// How many clients observe `resource`.
    pub async fn observers(&self, resource: ResourceId) -> usize {
        let command = |r| Command::Observe(ObserveCommand::Observers(resource, r));
        match call(self.channels, command).await {
            Outcome::Observers(n) => n,
            _ => unreachable!("the runner answers observers with the count"),
        }
    }

    /// The next observer that left: it deregistered, answered a notification with Reset,
    /// did not acknowledge a Confirmable one, or its session ended; or a notification that
    /// is not 2.xx ended its observation. While `N` removals wait here unread, the runner
    /// drops further ones: [`observers`](Self::observers) always has the count.
    pub async fn next_observer_removed(&self) -> ObserverRemoved {
        self.channels.removed.receive().await
    }
}

/// The runner's side: the observations whose handles wait for notifications and an end.
pub(crate) struct Observations<M: RawMutex> {
    slots: BTreeMap<RequestId, Arc<ObserveSlot<M>>>,
}

impl<M: RawMutex> Observations<M> {
    pub(crate) fn new() -> Self {
        Observations {
            slots: BTreeMap::new(),
        }
    }

    pub(crate) fn command(&mut self, endpoint: &mut Endpoint, command: ObserveCommand<M>) {
        let t = now();
        match command {
            ObserveCommand::Register(peer, packet, slot) => {
                let started = endpoint.observe(t, peer, &packet);
                if let Ok(id) = started {
                    self.slots.insert(id, slot.clone());
                }
                slot.started.signal(started);
            }
            // An observation that has ended is no longer the engine's: nothing to do.
            ObserveCommand::Deregister(id) => {
                // Refused (e.g. a connection's write backlog): its handle must still see an end.
                if self.slots.contains_key(&id) && endpoint.deregister(t, id).is_err() {
                    let _ = endpoint.cancel(t, id);
                }
            }
            ObserveCommand::Cancel(id) => {
                if self.slots.contains_key(&id) {
                    let _ = endpoint.cancel(t, id);
                }
            }
            ObserveCommand::Forget(id) => {
                if self.slots.contains_key(&id) {
                    forget(endpoint, id);
                }
            }
            ObserveCommand::Respond(id, resource, packet, reply) => {
                let result = endpoint.respond_observe(t, id, resource, &packet);
                reply.signal(Outcome::Observing(result));
            }
            ObserveCommand::Notify(resource, packet, confirmable, reply) => {
                let result = endpoint.notify(t, resource, &packet, confirmable);
                reply.signal(Outcome::Notified(result));
            }
            ObserveCommand::Observers(resource, reply) => {
                reply.signal(Outcome::Observers(endpoint.observers(resource)));
            }
        }
    }

    /// A notification replaces the one its handle has not taken yet.
    pub(crate) fn notification(
        &mut self,
        endpoint: &mut Endpoint,
        id: RequestId,
        response: Packet,
    ) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        // Only we hold it: its handle was dropped and could not tell us (the command channel
        // was full).
        if Arc::strong_count(slot) == 1 {
            forget(endpoint, id);
        } else {
            slot.notification.signal(response);
        }
    }

    /// Hands the end of exchange `id` to its observation; gives it back if `id` is none.
    pub(crate) fn end(&mut self, id: RequestId, outcome: Outcome) -> Option<Outcome> {
        let Some(slot) = self.slots.remove(&id) else {
            return Some(outcome);
        };
        match outcome {
            Outcome::Response(p) => slot.end.signal(Ok(p)),
            Outcome::Failed(e) => slot.end.signal(Err(e)),
            _ => {}
        }
        None
    }
}

/// Ends observation `id`, whose handle was dropped, so that the server stops notifying at
/// once: a deregistration, or a cancel if the engine cannot send one now.
fn forget(endpoint: &mut Endpoint, id: RequestId) {
    let t = now();
    if endpoint.deregister(t, id).is_err() {
        let _ = endpoint.cancel(t, id);
    }
}
