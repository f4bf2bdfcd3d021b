//! Observing resources (RFC 7641) from the application's side: [`Observation`], a stream of
//! notifications fed by the driver task, and the driver's end of it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use coap_engine::coap_lite::Packet;
use coap_engine::{Endpoint, Instant, RequestId};
use smol::channel::{self, Receiver, Sender, TrySendError};
use smol::stream::Stream;

use crate::handles::{call, Cmd, Core};
use crate::Error;

/// How many notifications an [`Observation`] holds that the application has not taken yet.
/// When one more arrives, the oldest held is dropped (and counted in
/// [`Observation::missed`]): a notification is the resource's state at the time it was
/// sent, so the freshest ones are worth keeping and an older state may be skipped
/// (RFC 7641 §1.1, §3.2: a client is only meant to converge on the current state). The
/// terminal item is never dropped. Memory per observation stays bounded whatever the
/// application does.
pub const NOTIFICATION_CAPACITY: usize = 16;

/// What the driver hands an observation.
pub(crate) enum Item {
    /// A fresh 2.xx notification (the registration's first response included).
    Notification(Packet),
    /// The terminal event: the final response, or why the observation failed.
    End(Result<Packet, Error>),
}

/// The driver's end of an [`Observation`].
pub(crate) struct Sink {
    tx: Sender<Item>,
    /// A second receiver, so that the driver can drop the oldest item when the queue is full.
    oldest: Receiver<Item>,
    missed: Arc<AtomicU64>,
}

impl Sink {
    /// Queues `item`, dropping the oldest held if the queue is full. False when the
    /// application's [`Observation`] is gone.
    pub(crate) fn push(&self, mut item: Item) -> bool {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    // Only the driver pushes, so one pop always makes room; the application
                    // taking items meanwhile only makes more.
                    if self.oldest.try_recv().is_ok() {
                        self.missed.fetch_add(1, Ordering::Relaxed);
                    }
                    item = back;
                }
            }
        }
    }

    /// Whether the application has let go of its [`Observation`].
    pub(crate) fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Ends observation `id` whose handle is gone: deregisters it (RFC 7641 §3.6), or cancels
/// it locally if a deregistration cannot be sent now (e.g. a TCP connection whose peer does
/// not read). The engine still ends it with a terminal event, which nobody takes.
pub(crate) fn abandon(endpoint: &mut Endpoint, now: Instant, id: RequestId) {
    match endpoint.deregister(now, id) {
        Ok(()) | Err(coap_engine::Error::UnknownRequest) => {}
        Err(e) => {
            log::debug!("observation {id:?}: cannot deregister ({e}); cancelling it");
            let _ = endpoint.cancel(now, id);
        }
    }
}

/// Ends every observation whose [`Observation`] was dropped.
pub(crate) fn sweep(core: &mut Core, now: Instant) {
    let gone: Vec<RequestId> = core
        .observations
        .iter()
        .filter(|(_, sink)| sink.abandoned())
        .map(|(&id, _)| id)
        .collect();
    for id in gone {
        core.observations.remove(&id);
        abandon(&mut core.endpoint, now, id);
    }
}

/// The channel between a new observation's driver end and its handle.
pub(crate) fn channel() -> (Sink, Receiver<Item>, Arc<AtomicU64>) {
    let (tx, rx) = channel::bounded(NOTIFICATION_CAPACITY);
    let missed = Arc::new(AtomicU64::new(0));
    let sink = Sink {
        tx,
        oldest: rx.clone(),
        missed: missed.clone(),
    };
    (sink, rx, missed)
}

/// An observation of a resource (RFC 7641), from [`Client::observe`](crate::Client::observe):
/// a [`Stream`] of `Result<Packet, Error>`.
///
/// - Each fresh 2.xx notification, the registration's first response included, is an
///   `Ok(packet)` (its Observe option holds the sequence number); late, reordered ones are
///   dropped by the engine (§3.4), and it re-registers by itself when Max-Age passes without
///   one (§3.3.1).
/// - The observation ends with exactly one terminal item, after which the stream ends and
///   [`is_ended`](Self::is_ended) is true: `Ok(response)` for the final response (one
///   without Observe or not 2.xx, e.g. a 4.04 once the resource is gone, or the answer to
///   a deregistration), or `Err(error)` when it failed (no answer, Reset, the session
///   failed or was closed). If the driver stops first, the last item is
///   `Err(`[`Error::DriverStopped`]`)`.
///
/// **Backpressure**: at most [`NOTIFICATION_CAPACITY`] notifications wait for the
/// application; beyond that the oldest is dropped and counted in [`missed`](Self::missed).
/// The driver never waits for the application.
///
/// **Dropping** an observation that has not ended deregisters it: the driver sends a GET
/// with Observe = 1 (RFC 7641 §3.6), so the server stops notifying at once rather than at
/// its next notification, and discards the answer. If a deregistration cannot be sent (a
/// TCP peer that does not read), the observation is cancelled locally instead, and the
/// server's next notification is answered with Reset. Call [`deregister`](Self::deregister)
/// to wait for the server's answer, or [`cancel`](Self::cancel) to forget the observation
/// without telling the server.
///
/// ```
/// use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
/// use coap_engine::ResourceId;
/// use coap_engine_smol::Driver;
/// use smol::stream::StreamExt as _;
///
/// const CLOCK: ResourceId = ResourceId(1);
/// fn content(payload: &[u8]) -> Packet {
///     let mut p = Packet::new();
///     p.header.code = MessageClass::Response(ResponseType::Content);
///     p.payload = payload.to_vec();
///     p
/// }
///
/// smol::block_on(async {
///     let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (addr, incoming, _task) = (server.local_addr().unwrap(), server.incoming(), server.spawn());
///     let client = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (client, _client_task) = (client.client(), client.spawn());
///
///     let mut get = Packet::new();
///     get.header.code = MessageClass::Request(RequestType::Get);
///     let mut observation = client.observe(addr, get).await.unwrap();
///
///     // The server adds the observer with its first answer, then notifies.
///     let registration = incoming.next().await.unwrap();
///     assert!(registration.responder.respond_observe(CLOCK, content(b"0")).await.unwrap());
///     assert_eq!(observation.next().await.unwrap().unwrap().payload, b"0");
///     assert_eq!(incoming.notify(CLOCK, content(b"1"), true).await.unwrap(), 1);
///     assert_eq!(observation.next().await.unwrap().unwrap().payload, b"1");
///
///     // Deregistering: the server answers the GET with Observe = 1.
///     smol::spawn(async move {
///         let deregistration = incoming.next().await.unwrap();
///         deregistration.responder.respond(content(b"bye")).await.unwrap();
///     })
///     .detach();
///     assert_eq!(observation.deregister().await.unwrap().payload, b"bye");
/// });
/// ```
pub struct Observation {
    id: RequestId,
    peer: SocketAddr,
    cmds: Sender<Cmd>,
    rx: Pin<Box<Receiver<Item>>>,
    missed: Arc<AtomicU64>,
    ended: bool,
}

impl Observation {
    pub(crate) fn new(
        id: RequestId,
        peer: SocketAddr,
        cmds: Sender<Cmd>,
        rx: Receiver<Item>,
        missed: Arc<AtomicU64>,
    ) -> Observation {
        Observation {
            id,
            peer,
            cmds,
            rx: Box::pin(rx),
            missed,
            ended: false,
        }
    }

    /// The engine's id of this observation (its registration request).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The server observed.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the terminal item has been taken: the stream has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// How many notifications were dropped because [`NOTIFICATION_CAPACITY`] newer ones were
    /// waiting for the application.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// Deregisters (RFC 7641 §3.6: a GET with Observe = 1 and the registration's token) and
    /// resolves to the server's answer, or to why none came. Notifications still waiting
    /// are skipped. If the observation had already ended but its terminal item was not yet
    /// taken, that item is the result; if it was taken,
    /// `Err(`[`Error::Rejected`]`(`[`UnknownRequest`](coap_engine::Error::UnknownRequest)`))`.
    /// If the engine cannot send the deregistration now (`Rejected(QueueFull)`: a TCP peer
    /// that does not read), that error is returned and the observation is cancelled
    /// locally, as on drop.
    pub async fn deregister(mut self) -> Result<Packet, Error> {
        if self.ended {
            return Err(Error::Rejected(coap_engine::Error::UnknownRequest));
        }
        let id = self.id;
        match call(&self.cmds, move |e, now| e.deregister(now, id)).await {
            // Unknown: it ended on its own meanwhile, and its terminal item is queued.
            Ok(()) | Err(Error::Rejected(coap_engine::Error::UnknownRequest)) => {}
            Err(e) => return Err(e),
        }
        loop {
            match self.rx.recv().await {
                Ok(Item::Notification(_)) => {}
                Ok(Item::End(outcome)) => {
                    self.ended = true;
                    return outcome;
                }
                Err(_) => {
                    self.ended = true;
                    return Err(Error::DriverStopped);
                }
            }
        }
    }

    /// Forgets the observation without telling the server (RFC 7641 §3.6): the engine
    /// answers its next notification with Reset, which removes us as an observer there.
    /// Resolves once the engine has forgotten it (also if it had already ended).
    pub async fn cancel(mut self) -> Result<(), Error> {
        let id = self.id;
        self.ended = true;
        match call(&self.cmds, move |e, now| e.cancel(now, id)).await {
            Ok(()) | Err(Error::Rejected(coap_engine::Error::UnknownRequest)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("ended", &self.ended)
            .field("missed", &self.missed())
            .finish()
    }
}

impl Stream for Observation {
    type Item = Result<Packet, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Item::Notification(packet))) => Poll::Ready(Some(Ok(packet))),
            Poll::Ready(Some(Item::End(outcome))) => {
                self.ended = true;
                Poll::Ready(Some(outcome))
            }
            // The driver let go without a terminal event: it has stopped.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(Error::DriverStopped)))
            }
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Closed first, so the driver sees it abandoned whenever it runs the command.
        self.rx.close();
        let id = self.id;
        let _ = self.cmds.try_send(Box::new(move |s, now| {
            if s.observations.remove(&id).is_some() {
                abandon(&mut s.endpoint, now, id);
            }
        }));
    }
}
