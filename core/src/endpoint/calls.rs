//! The application calls: requests, responses, observations, pings and sessions opened,
//! closed or tuned by the application.

use core::net::SocketAddr;

use coap_lite::{MessageType, Packet};

use super::Endpoint;
use crate::config::Keepalive;
use crate::error::Error;
use crate::event::{CloseReason, IncomingRequestId, RequestId};
use crate::observe::{Observation, ResourceId};
use crate::session::{slot_of, Ending};
use crate::time::Instant;

impl Endpoint {
    #[cfg(feature = "client")]
    /// Sends a request to `peer` (opening a session if there is none). The packet's code must
    /// be a method and its type Confirmable (the default of `Packet::new()`) or
    /// Non-confirmable; the engine assigns the Message ID, and a random token unless the
    /// packet carries one. The request goes out at once, or waits in the peer's queue while
    /// NSTART requests are outstanding. It ends in exactly one of [`Event::Response`](crate::Event::Response) or
    /// [`Event::RequestFailed`](crate::Event::RequestFailed). A body too large for one message is sent block-wise, and a
    /// response in blocks is delivered whole (see [`Blockwise`](crate::Blockwise)).
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Packet,
    ) -> Result<RequestId, Error> {
        let now = self.check_request(now, request)?;
        let name = uri_host(request);
        self.with_local_session(now, peer, name, |s, ctx| s.request(now, ctx, request, None))
    }

    #[cfg(all(feature = "client", feature = "observe"))]
    /// Observes a resource (RFC 7641): sends `request` (a GET or FETCH; its Observe option is
    /// set to 0, register) and keeps the exchange open. Every fresh 2.xx notification,
    /// the first response included, arrives as [`Event::Notification`](crate::Event::Notification) with the returned id;
    /// late, reordered ones are dropped by the rule of RFC 7641 §3.4. When Max-Age passes
    /// without a notification the engine re-registers (§3.3.1). The observation ends with
    /// exactly one terminal event:
    /// - [`Event::Response`](crate::Event::Response): a response without Observe or not 2.xx (the server would not
    ///   or no longer will notify, e.g. 4.04 after a DELETE), or the answer to
    ///   [`deregister`](Self::deregister);
    /// - [`Event::RequestFailed`](crate::Event::RequestFailed): no answer, Reset, [`cancel`](Self::cancel) (the next
    ///   notification is then rejected with Reset, §3.6), or the session failed (keepalive).
    ///
    /// ```
    /// use coap_engine::{Config, Endpoint, Instant};
    /// use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    ///
    /// let mut client = Endpoint::new(Config::default(), 7).unwrap();
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// get.add_option(CoapOption::UriPath, b"time".to_vec());
    /// let id = client.observe(Instant::ZERO, "127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// let sent = client.poll_transmit().unwrap();
    /// assert_eq!(sent.payload[4..].len() > 0, true); // a GET with Observe = 0 is on its way
    /// # let _ = id;
    /// ```
    pub fn observe(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Packet,
    ) -> Result<RequestId, Error> {
        let now = self.check_request(now, request)?;
        if !matches!(u8::from(request.header.code), 1 | 5) {
            return Err(Error::NotObservable);
        }
        let mut request = request.clone();
        request.set_observe_value(0);
        let observation = alloc::boxed::Box::new(Observation {
            request: request.clone(),
            last: None,
            reregister_at: None,
            deregistering: false,
        });
        let name = uri_host(&request);
        self.with_local_session(now, peer, name, |s, ctx| {
            s.request(now, ctx, &request, Some(observation))
        })
    }

    #[cfg(all(feature = "client", feature = "observe"))]
    /// Ends observation `id` by deregistering (RFC 7641 §3.6): a GET with Observe = 1 and the
    /// registration's token and options. Notifications that still arrive are acknowledged
    /// but not delivered; the observation's terminal event is the answer to this GET
    /// ([`Event::Response`](crate::Event::Response)) or [`Event::RequestFailed`](crate::Event::RequestFailed) if none comes. To end one without
    /// telling the server, use [`cancel`](Self::cancel).
    pub fn deregister(&mut self, now: Instant, id: RequestId) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownRequest)
            .and_then(|s| s.deregister(now, &mut ctx, id));
        self.rearm(slot);
        result
    }

    #[cfg(feature = "client")]
    /// Checks what every request must be; moves time to `now`.
    fn check_request(&mut self, now: Instant, request: &Packet) -> Result<Instant, Error> {
        let now = self.advance(now);
        let code = u8::from(request.header.code);
        if code >> 5 != 0 || code == 0 {
            return Err(Error::NotARequest);
        }
        if !matches!(
            request.header.get_type(),
            MessageType::Confirmable | MessageType::NonConfirmable
        ) {
            return Err(Error::InvalidMessageType);
        }
        if request.get_token().len() > 8 {
            return Err(Error::TokenTooLong);
        }
        Ok(now)
    }

    #[cfg(feature = "server")]
    /// Answers incoming request `id` (from [`Event::Request`](crate::Event::Request)): piggybacked on the ACK if the
    /// engine has not yet sent an Empty ACK, otherwise as a separate Confirmable response that
    /// is retransmitted until acknowledged; a Non-confirmable request gets a Non-confirmable
    /// response. The engine sets type, Message ID and token; the packet's code must be a
    /// response code. Give the whole representation: if it is larger than the block the request
    /// asked for (or than the block size, or than `max_message_size`), the engine sends just
    /// that block (RFC 7959 §2.4), and answers each further block request the application
    /// answers the same way. The answer to a PUT, POST or other unsafe request is kept, and
    /// its further blocks are sent by the engine itself (§2.7; see
    /// [`Limits::max_block_transfers`](crate::Limits::max_block_transfers)).
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: &Packet,
    ) -> Result<(), Error> {
        self.answer(now, id, response, None).map(|_| ())
    }

    #[cfg(feature = "server")]
    /// `respond` and `respond_observe`: Ok(whether an observer was added).
    fn answer(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: &Packet,
        observe: Option<ResourceId>,
    ) -> Result<bool, Error> {
        let now = self.advance(now);
        let class = u8::from(response.header.code) >> 5;
        if !(2..=5).contains(&class) {
            return Err(Error::NotAResponse);
        }
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownRequest)
            .and_then(|s| s.respond(now, &mut ctx, id, response, observe));
        self.rearm(slot);
        result
    }

    #[cfg(all(feature = "server", feature = "observe"))]
    /// Answers incoming request `id` like [`respond`](Self::respond) and, if it is a
    /// registration (a GET or FETCH with Observe = 0, RFC 7641 §3.1) and `response` is 2.xx,
    /// adds its sender as an observer of `resource`: the response gets an Observe option,
    /// and [`notify`](Self::notify) reaches the observer from then on. Returns whether the
    /// observer was added; it is not when the request was no registration, the response is
    /// not 2.xx, or [`Limits::max_observers`](crate::Limits::max_observers) /
    /// `max_observers_per_resource` is reached (the response then goes without Observe,
    /// which tells the client, §4.1). A registration with a token the client already
    /// observes with refreshes that entry (§4.1). Observers leave with
    /// [`Event::ObserverRemoved`](crate::Event::ObserverRemoved).
    pub fn respond_observe(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        resource: ResourceId,
        response: &Packet,
    ) -> Result<bool, Error> {
        self.answer(now, id, response, Some(resource))
    }

    #[cfg(all(feature = "server", feature = "observe"))]
    /// Sends `notification` (a response: code, options and payload; the engine sets type,
    /// Message ID, token and the Observe sequence number) to every observer of `resource`,
    /// and returns how many there were (RFC 7641 §4.2).
    ///
    /// Notifications are Non-confirmable unless `confirmable` is set, except that each
    /// observer gets a Confirmable one at least every 24 hours and while a previous
    /// Confirmable notification to it is still unacknowledged, which the new one replaces
    /// (§4.5, §4.5.2). An observer whose Confirmable notification is never acknowledged, or
    /// who answers one with Reset, is removed. A notification that is not 2.xx is the last:
    /// it is sent without Observe and ends every observation of `resource` (§3.2).
    pub fn notify(
        &mut self,
        now: Instant,
        resource: ResourceId,
        notification: &Packet,
        confirmable: bool,
    ) -> Result<usize, Error> {
        let now = self.advance(now);
        let class = u8::from(notification.header.code) >> 5;
        if !(2..=5).contains(&class) {
            return Err(Error::NotAResponse);
        }
        let mut notification = notification.clone();
        if class == 2 {
            notification.set_observe_value(self.observe.next_seq());
        } else {
            notification.clear_option(coap_lite::CoapOption::Observe);
        }
        let mut sent = 0;
        for key in self.observe.sessions(resource) {
            if self.generations.get(key.slot as usize) != Some(&key.generation) {
                continue;
            }
            let (session, mut ctx) = self.split(key.slot);
            if let Some(s) = session {
                sent += s.notify(now, &mut ctx, resource, &notification, confirmable);
            }
            self.rearm(key.slot);
        }
        Ok(sent)
    }

    #[cfg(all(feature = "server", feature = "observe"))]
    /// How many clients observe `resource`.
    pub fn observers(&self, resource: ResourceId) -> usize {
        self.observe.count(resource)
    }

    /// Sends a CoAP ping (an Empty Confirmable message, RFC 7252 §4.3) to `peer`, opening a
    /// session if needed. Ends in [`Event::Pong`](crate::Event::Pong) or [`Event::PingFailed`](crate::Event::PingFailed). Pings are not held
    /// back by NSTART: liveness probing is independent of the request pipeline.
    pub fn ping(&mut self, now: Instant, peer: SocketAddr) -> Result<RequestId, Error> {
        let now = self.advance(now);
        self.with_local_session(now, peer, None, |s, ctx| s.ping(now, ctx))
    }

    /// Cancels one of our requests or pings; it ends with
    /// [`ExchangeError::Cancelled`](crate::ExchangeError::Cancelled). A late response to it will be answered with Reset.
    pub fn cancel(&mut self, now: Instant, id: RequestId) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let found = session.is_some_and(|s| s.cancel(&mut ctx, id, now));
        self.rearm(slot);
        if found {
            Ok(())
        } else {
            Err(Error::UnknownRequest)
        }
    }

    /// Opens a session with `peer` without sending anything, so that keepalive starts
    /// watching it (the session counts as silent from now). Does nothing if one exists.
    pub fn open_session(&mut self, now: Instant, peer: SocketAddr) -> Result<(), Error> {
        let now = self.advance(now);
        if self.by_peer.get(&peer, &self.sessions).is_none() {
            let slot = self.create_local_session(now, peer, None)?;
            self.after_local_call(now, slot, true, peer, true);
        }
        Ok(())
    }

    /// Closes the session with `peer`: its pending exchanges end with
    /// [`ExchangeError::SessionClosed`](crate::ExchangeError::SessionClosed), then
    /// [`Event::SessionClosed`](crate::Event::SessionClosed) is emitted and all its state is freed.
    pub fn close_session(&mut self, now: Instant, peer: SocketAddr) -> Result<(), Error> {
        self.advance(now);
        let slot = self
            .by_peer
            .get(&peer, &self.sessions)
            .ok_or(Error::UnknownSession)?;
        self.end_session(slot, Ending::Closed(CloseReason::Local));
        Ok(())
    }

    /// Sets (or with `None` clears) the keepalive of the session with `peer`, overriding
    /// [`Config::keepalive`](crate::Config::keepalive). Silence is measured from the later of `now` and the last message
    /// heard.
    pub fn set_keepalive(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = self
            .by_peer
            .get(&peer, &self.sessions)
            .ok_or(Error::UnknownSession)?;
        if let Some(Some(s)) = self.sessions.get_mut(slot as usize) {
            s.set_keepalive(now, keepalive);
        }
        self.rearm(slot);
        Ok(())
    }
}

#[cfg(feature = "client")]
/// The host a request names (its Uri-Host, RFC 7252 §5.10.1), for checking a server's
/// certificate; an IP literal there is checked as an address, like the destination.
fn uri_host(request: &Packet) -> Option<alloc::string::String> {
    let host = request.get_first_option(coap_lite::CoapOption::UriHost)?;
    core::str::from_utf8(host)
        .ok()
        .map(alloc::string::String::from)
}
