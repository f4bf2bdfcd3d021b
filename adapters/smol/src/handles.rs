//! What every driver shares, whatever its transport: the engine and the routing of its
//! events, and the application's handles ([`Client`], [`Incoming`], [`Responder`],
//! [`Events`]), which reach the engine as commands run inside the driver task.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration as StdDuration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::{
    Config, Endpoint, Event, IncomingRequestId, Instant, Keepalive, RequestId, ResourceId,
};
use smol::channel::{self, Receiver, Sender, WeakSender};
use smol::stream::Stream;

use crate::observe::{self, Item, Observation, Sink};
use crate::{Error, EVENT_CAPACITY};

/// Work for the driver task: a closure run on the engine's state. Every handle call is one.
pub(crate) type Cmd = Box<dyn FnOnce(&mut Core, Instant) + Send>;

/// An endpoint for `config` with a random seed.
pub(crate) fn new_endpoint(config: Config) -> io::Result<Endpoint> {
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Endpoint::new(config, seed).map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))
}

/// Seconds since 1970 by the system clock; `None` for a clock set before 1970, which would
/// only make every certificate look not yet valid.
fn unix_time() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// The application's side of a driver, handed out before it runs.
pub(crate) struct Handles {
    /// What the handles ask of the driver; closed once every handle is gone.
    pub(crate) cmd_rx: Receiver<Cmd>,
    pub(crate) client: Client,
    pub(crate) incoming: Incoming,
    pub(crate) events: Events,
}

impl Handles {
    /// The driver keeps only the command queue: from now on the application's handles alone
    /// keep it running.
    pub(crate) fn into_commands(self) -> Receiver<Cmd> {
        self.cmd_rx
    }
}

/// The engine and where its outputs go, owned by the driver task: what a [`Cmd`] acts on.
pub(crate) struct Core {
    pub(crate) endpoint: Endpoint,
    epoch: StdInstant,
    /// For the [`Responder`]s it hands out; weak, or the driver would keep itself running.
    responders: WeakSender<Cmd>,
    incoming_tx: Sender<IncomingRequest>,
    events_tx: Sender<Event>,
    /// Requests and pings whose future is waiting for their terminal event.
    pending: HashMap<RequestId, Sender<Result<Event, Error>>>,
    /// Observations whose [`Observation`] takes their notifications and terminal event.
    pub(crate) observations: HashMap<RequestId, Sink>,
}

impl Core {
    /// Takes the engine and makes the handles that reach it. Tells the endpoint the
    /// wall-clock time, which a secure endpoint needs for certificates' validity periods.
    pub(crate) fn new(mut endpoint: Endpoint) -> (Core, Handles) {
        let epoch = StdInstant::now();
        if let Some(secs) = unix_time() {
            endpoint.set_unix_time(Instant::ZERO, secs);
        }
        let (cmds, cmd_rx) = channel::unbounded();
        let (incoming_tx, incoming_rx) = channel::unbounded();
        let (events_tx, events_rx) = channel::bounded(EVENT_CAPACITY);
        let core = Core {
            endpoint,
            epoch,
            responders: cmds.downgrade(),
            incoming_tx,
            events_tx,
            pending: HashMap::new(),
            observations: HashMap::new(),
        };
        let handles = Handles {
            cmd_rx,
            incoming: Incoming {
                rx: incoming_rx,
                _cmds: cmds.clone(),
            },
            events: Events(Box::pin(events_rx)),
            client: Client { cmds },
        };
        (core, handles)
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// When the engine's `deadline` falls by the system clock.
    pub(crate) fn instant_of(&self, deadline: Instant) -> StdInstant {
        self.epoch + StdDuration::from_micros(deadline.as_micros())
    }

    /// Routes every event the engine has; whether there was any.
    pub(crate) fn route_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.endpoint.poll_event() {
            self.route(event);
            any = true;
        }
        any
    }

    /// Hands an event to the future or [`Observation`] waiting for it, to [`Incoming`] or
    /// to [`Events`].
    fn route(&mut self, event: Event) {
        let (id, outcome) = match event {
            Event::Request { id, peer, request } => return self.incoming(id, peer, request),
            Event::Notification { id, response, .. } => {
                // Absent when its Observation was dropped: it is being deregistered.
                if let Some(sink) = self.observations.get(&id) {
                    if !sink.push(Item::Notification(response)) {
                        self.observations.remove(&id);
                        let now = self.now();
                        observe::abandon(&mut self.endpoint, now, id);
                    }
                }
                return;
            }
            Event::Response { id, response, .. } if self.observations.contains_key(&id) => {
                return self.end_observation(id, Ok(response));
            }
            Event::RequestFailed { id, error, .. } if self.observations.contains_key(&id) => {
                return self.end_observation(id, Err(Error::Exchange(error)));
            }
            Event::Response { id, .. } | Event::Pong { id, .. } => (id, Ok(event)),
            Event::RequestFailed { id, error, .. } | Event::PingFailed { id, error, .. } => {
                (id, Err(Error::Exchange(error)))
            }
            other => {
                if let Err(e) = self.events_tx.try_send(other) {
                    if e.is_full() {
                        log::warn!("event stream full; dropping {:?}", e.into_inner());
                    }
                }
                return;
            }
        };
        // Absent when its future was dropped (cancelled): nobody is waiting.
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.try_send(outcome);
        }
    }

    fn end_observation(&mut self, id: RequestId, outcome: Result<Packet, Error>) {
        if let Some(sink) = self.observations.remove(&id) {
            sink.push(Item::End(outcome));
        }
    }

    fn incoming(&mut self, id: IncomingRequestId, peer: SocketAddr, request: Packet) {
        match self.responders.upgrade() {
            Some(cmds) if self.incoming_tx.receiver_count() > 0 => {
                let responder = Responder {
                    id,
                    cmds,
                    answered: false,
                };
                let _ = self.incoming_tx.try_send(IncomingRequest {
                    peer,
                    request,
                    responder,
                });
            }
            _ => drop(
                self.endpoint
                    .respond(self.now(), id, &code(ResponseType::NotFound)),
            ),
        }
    }
}

fn code(code: ResponseType) -> Packet {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Response(code);
    packet
}

/// A handle for sending requests and pings and managing sessions. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmds: Sender<Cmd>,
}

impl Client {
    /// Sends `request` to `peer` and resolves to the response. Dropping the future cancels
    /// the request in the engine. Over UDP the request is Confirmable unless the packet says
    /// Non-confirmable; over TCP it goes on the connection with `peer`, opened first if there
    /// is none.
    pub async fn request(&self, peer: SocketAddr, request: Packet) -> Result<Packet, Error> {
        let event = self.exchange(move |e, now| e.request(now, peer, &request));
        match event.await? {
            Event::Response { response, .. } => Ok(response),
            other => unreachable!("a request ended with {other:?}"),
        }
    }

    /// Sends a CoAP ping to `peer` (an Empty Confirmable message over UDP, a 7.02 Ping over
    /// TCP) and resolves to the round-trip time.
    pub async fn ping(&self, peer: SocketAddr) -> Result<StdDuration, Error> {
        match self.exchange(move |e, now| e.ping(now, peer)).await? {
            Event::Pong { rtt, .. } => Ok(rtt.into()),
            other => unreachable!("a ping ended with {other:?}"),
        }
    }

    /// Observes a resource of `peer` (RFC 7641): sends `request` (a GET or FETCH; the engine
    /// sets its Observe option to 0, register) and resolves, once the engine has sent or
    /// queued it, to the [`Observation`]: a stream of the notifications, the registration's
    /// first response included, ending with the final response or the failure. See
    /// [`Observation`] for what dropping it does and how notifications are held.
    ///
    /// Fails with [`Error::Rejected`] if the engine refuses the request (e.g.
    /// [`NotObservable`](coap_engine::Error::NotObservable) for a method other than GET or
    /// FETCH); nothing is sent then. Over TCP the registration goes on the connection with
    /// `peer`, opened first if there is none.
    pub async fn observe(&self, peer: SocketAddr, request: Packet) -> Result<Observation, Error> {
        let (sink, rx, missed) = observe::channel();
        let (reply, reply_rx) = channel::bounded(1);
        let cmd: Cmd = Box::new(
            move |s, now| match s.endpoint.observe(now, peer, &request) {
                Ok(id) => {
                    s.observations.insert(id, sink);
                    // Its future may have been dropped meanwhile: then nobody observes.
                    if reply.try_send(Ok(id)).is_err() {
                        observe::sweep(s, now);
                    }
                }
                Err(e) => drop(reply.try_send(Err(Error::Rejected(e)))),
            },
        );
        self.cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
        // Dropped before the id came back: the channel closes, and the driver ends the
        // observation it may already have started.
        let abandon_on_drop = AbandonOnDrop(&self.cmds, &rx);
        let id = reply_rx.recv().await.unwrap_or(Err(Error::DriverStopped));
        std::mem::forget(abandon_on_drop);
        Ok(Observation::new(id?, peer, self.cmds.clone(), rx, missed))
    }

    /// Opens a session with `peer` without sending a request, so that keepalive watches it
    /// (over TCP: opens the connection).
    pub async fn open_session(&self, peer: SocketAddr) -> Result<(), Error> {
        call(&self.cmds, move |e, now| e.open_session(now, peer)).await
    }

    /// Closes the session with `peer` (over TCP with a 7.04 Release, then the connection);
    /// its pending requests end with
    /// [`ExchangeError::SessionClosed`](coap_engine::ExchangeError::SessionClosed).
    pub async fn close_session(&self, peer: SocketAddr) -> Result<(), Error> {
        call(&self.cmds, move |e, now| e.close_session(now, peer)).await
    }

    /// Sets (or clears) the keepalive of the existing session with `peer`.
    pub async fn set_keepalive(
        &self,
        peer: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(), Error> {
        call(&self.cmds, move |e, now| {
            e.set_keepalive(now, peer, keepalive)
        })
        .await
    }

    /// Starts a request or ping in the driver and waits for its terminal event (a failure
    /// comes as `Err`).
    async fn exchange(
        &self,
        start: impl FnOnce(&mut Endpoint, Instant) -> Result<RequestId, coap_engine::Error>
            + Send
            + 'static,
    ) -> Result<Event, Error> {
        let (reply, rx) = channel::bounded(1);
        let cmd: Cmd = Box::new(move |s, now| match start(&mut s.endpoint, now) {
            Ok(id) => drop(s.pending.insert(id, reply)),
            Err(e) => drop(reply.try_send(Err(Error::Rejected(e)))),
        });
        self.cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
        let cancel_on_drop = CancelOnDrop(&self.cmds, &rx);
        let result = rx.recv().await.unwrap_or(Err(Error::DriverStopped));
        std::mem::forget(cancel_on_drop);
        result
    }
}

/// Runs `f` on the engine inside the driver and waits for its result.
pub(crate) async fn call<T: Send + 'static>(
    cmds: &Sender<Cmd>,
    f: impl FnOnce(&mut Endpoint, Instant) -> Result<T, coap_engine::Error> + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = channel::bounded(1);
    let cmd: Cmd = Box::new(move |s, now| drop(tx.try_send(f(&mut s.endpoint, now))));
    cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
    let result = rx.recv().await.map_err(|_| Error::DriverStopped)?;
    result.map_err(Error::Rejected)
}

/// Dropped with a request's future before it resolved: closes its answer channel, and the
/// driver cancels every pending exchange whose channel is closed.
struct CancelOnDrop<'a, T>(&'a Sender<Cmd>, &'a Receiver<T>);

impl<T> Drop for CancelOnDrop<'_, T> {
    fn drop(&mut self) {
        self.1.close();
        let _ = self.0.try_send(Box::new(|s, now| {
            s.pending.retain(|&id, reply| {
                let gone = reply.is_closed();
                if gone {
                    let _ = s.endpoint.cancel(now, id);
                }
                !gone
            })
        }));
    }
}

/// Dropped with [`Client::observe`]'s future before it resolved: closes the observation's
/// channel, and the driver ends every observation whose channel is closed.
struct AbandonOnDrop<'a>(&'a Sender<Cmd>, &'a Receiver<Item>);

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        self.1.close();
        let _ = self.0.try_send(Box::new(observe::sweep));
    }
}

/// A request received by the server side, with the [`Responder`] that answers it.
pub struct IncomingRequest {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The request as received (already deduplicated by the engine).
    pub request: Packet,
    /// Answers it, now or later.
    pub responder: Responder,
}

/// Answers one incoming request. Respond whenever ready: over UDP, if it takes longer than
/// [`Config::empty_ack_delay`] the engine has already acknowledged the request and the answer
/// goes out as a separate response (over TCP there is nothing to acknowledge). Dropping it
/// unanswered sends 5.00 Internal Server Error. A registration (Observe = 0 in the request,
/// RFC 7641) is answered with [`respond_observe`](Self::respond_observe) to add an observer.
pub struct Responder {
    id: IncomingRequestId,
    cmds: Sender<Cmd>,
    answered: bool,
}

impl Responder {
    /// Sends `response` (its code must be a response code; type, Message ID and token are set
    /// by the engine). Resolves once the engine has accepted it.
    pub async fn respond(mut self, response: Packet) -> Result<(), Error> {
        self.answered = true;
        let id = self.id;
        call(&self.cmds, move |e, now| e.respond(now, id, &response)).await
    }

    /// Answers a registration (a GET or FETCH with Observe = 0, RFC 7641 §3.1) and, if
    /// `response` is 2.xx, adds the client as an observer of `resource`
    /// ([`Endpoint::respond_observe`]): the response carries an Observe option, and
    /// [`Incoming::notify`] reaches the client from then on. Resolves to whether the
    /// observer was added: not when the request was no registration, the response is not
    /// 2.xx, or [`Limits::max_observers`](coap_engine::Limits::max_observers) /
    /// `max_observers_per_resource` is reached (the response then goes as a plain one,
    /// which tells the client). The observer leaves with
    /// [`Event::ObserverRemoved`] on [`Events`].
    pub async fn respond_observe(
        mut self,
        resource: ResourceId,
        response: Packet,
    ) -> Result<bool, Error> {
        self.answered = true;
        let id = self.id;
        call(&self.cmds, move |e, now| {
            e.respond_observe(now, id, resource, &response)
        })
        .await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let id = self.id;
            let _ = self.cmds.try_send(Box::new(move |s, now| {
                let _ = s
                    .endpoint
                    .respond(now, id, &code(ResponseType::InternalServerError));
            }));
        }
    }
}

/// The stream of incoming requests (server side). Clones share one queue: each request goes
/// to one of them. Holding it keeps the driver running. It also reaches the observers of
/// the server's resources: [`notify`](Self::notify), [`observers`](Self::observers).
///
/// A server that answers late, as a separate response (the engine sends the Empty ACK):
/// ```
/// use std::time::Duration;
/// use coap_engine::coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
/// use coap_engine_smol::Driver;
///
/// smol::block_on(async {
///     let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (addr, incoming, _task) = (server.local_addr().unwrap(), server.incoming(), server.spawn());
///     smol::spawn(async move {
///         while let Some(req) = incoming.next().await {
///             smol::Timer::after(Duration::from_millis(1200)).await; // > empty_ack_delay (1 s)
///             let mut response = Packet::new();
///             response.header.code = MessageClass::Response(ResponseType::Content);
///             req.responder.respond(response).await.unwrap();
///         }
///     })
///     .detach();
///
///     let client = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (client, _task) = (client.client(), client.spawn());
///     let mut get = Packet::new();
///     get.header.code = MessageClass::Request(RequestType::Get);
///     let response = client.request(addr, get).await.unwrap();
///     assert_eq!(response.header.get_type(), MessageType::Confirmable); // not piggybacked
/// });
/// ```
#[derive(Clone)]
pub struct Incoming {
    rx: Receiver<IncomingRequest>,
    _cmds: Sender<Cmd>,
}

impl Incoming {
    /// The next incoming request; `None` once the driver has stopped.
    pub async fn next(&self) -> Option<IncomingRequest> {
        self.rx.recv().await.ok()
    }

    /// Sends `notification` (a response: code, options and payload) to every observer of
    /// `resource` and resolves to how many there were ([`Endpoint::notify`], RFC 7641
    /// §4.2). The engine sets type, Message ID, token and the Observe sequence number.
    /// Non-confirmable unless `confirmable` (over TCP there are no types); the engine still
    /// makes one Confirmable at least every 24 hours and while an earlier one is
    /// unacknowledged. A notification that is not 2.xx is the last: it ends every
    /// observation of `resource`.
    pub async fn notify(
        &self,
        resource: ResourceId,
        notification: Packet,
        confirmable: bool,
    ) -> Result<usize, Error> {
        call(&self._cmds, move |e, now| {
            e.notify(now, resource, &notification, confirmable)
        })
        .await
    }

    /// How many clients observe `resource` ([`Endpoint::observers`]).
    pub async fn observers(&self, resource: ResourceId) -> Result<usize, Error> {
        call(&self._cmds, move |e, _| Ok(e.observers(resource))).await
    }

    /// Serves every incoming request with `handler`, each in its own task on smol's global
    /// executor, so a slow answer (sent as a separate response) holds up no other request.
    /// Runs until the driver stops. Every answer is a plain one, which adds no observer: serve
    /// observable resources from [`next`](Self::next) with
    /// [`Responder::respond_observe`].
    pub async fn serve<F, Fut>(self, handler: F)
    where
        F: Fn(SocketAddr, Packet) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Packet> + Send + 'static,
    {
        let handler = Arc::new(handler);
        while let Some(incoming) = self.next().await {
            let handler = handler.clone();
            smol::spawn(async move {
                let (peer, responder) = (incoming.peer, incoming.responder);
                let response = handler(peer, incoming.request).await;
                if let Err(e) = responder.respond(response).await {
                    log::warn!("response to {peer} not sent: {e}");
                }
            })
            .detach();
        }
    }
}

/// The session event stream: [`Event::SessionNew`], [`Event::SessionEstablished`],
/// [`Event::SessionFailed`], [`Event::SessionClosed`], [`Event::SendFailed`],
/// [`Event::HandshakeFailed`] (a secure server's refused or stalled handshakes),
/// [`Event::Released`] (a TCP peer's 7.04 Release), [`Event::ObserverRemoved`] (a client
/// stopped observing one of our resources), and the engine's other events. Responses,
/// pongs and failures of requests and pings go to their futures (and are dropped with a
/// future that was dropped), notifications and the end of observations to their
/// [`Observation`], requests to [`Incoming`]. Bounded by [`EVENT_CAPACITY`].
pub struct Events(Pin<Box<Receiver<Event>>>);

impl Clone for Events {
    fn clone(&self) -> Self {
        Events(Box::pin(Receiver::clone(&self.0)))
    }
}

impl Events {
    /// The next event; `None` once the driver has stopped.
    pub async fn recv(&self) -> Option<Event> {
        self.0.recv().await.ok()
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.as_mut().poll_next(cx)
    }
}
