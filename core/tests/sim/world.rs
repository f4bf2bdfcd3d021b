//! The two-node world most tests start from: a client and a server joined by one kind of
//! link, built in one place so that every test file sets it up the same way (same seed, same
//! order of endpoints, so the same engine seeds).
//!
//! ```ignore
//! let mut w = World::builder(seed).delay(D).server(config).build();
//! w.sim.set_app(w.server, |sim, node, event| { /* answer */ });
//! let id = w.request(&con_get("x", b""));
//! w.sim.run_for(secs(1));
//! ```

use std::net::SocketAddr;

#[cfg(feature = "server")]
use coap_engine::coap_lite::CoapOption;
use coap_engine::coap_lite::Packet;
use coap_engine::{
    Config, Duration, Event, ExchangeError, FailureReason, Instant, RequestId, ResourceId,
};

#[cfg(feature = "client")]
use super::con_get;
#[cfg(feature = "server")]
use super::content;
use super::{addr, Link, Logged, NodeId, Sim};

/// The `NodeId` of a side that is a raw node (no engine): using it as a node is a bug the
/// simulator panics on.
pub const RAW: NodeId = usize::MAX;

/// The resource the usual server application registers observers of.
pub const TIME: ResourceId = ResourceId(1);

/// A client and a server in a [`Sim`]; `app` is the test's own state for its applications.
pub struct World<A = ()> {
    pub sim: Sim,
    /// The client engine, or [`RAW`].
    pub client: NodeId,
    /// The server engine, or [`RAW`].
    pub server: NodeId,
    pub ca: SocketAddr,
    pub sa: SocketAddr,
    pub app: A,
}

type App = Box<dyn FnMut(&mut Sim, NodeId, &Event)>;

/// Builds a [`World`]: by default two endpoints with `Config::default()`, the client at
/// 127.0.0.1:40000 and the server at 127.0.0.1:5683, over `Link::default()`.
pub struct WorldBuilder {
    seed: u64,
    link: Link,
    /// An engine's configuration, or `None` for a raw node.
    client: Option<Config>,
    server: Option<Config>,
    ca: SocketAddr,
    sa: SocketAddr,
    server_app: Option<App>,
}

impl World {
    /// A builder for a world whose every random choice derives from `seed`.
    pub fn builder(seed: u64) -> WorldBuilder {
        WorldBuilder {
            seed,
            link: Link::default(),
            client: Some(Config::default()),
            server: Some(Config::default()),
            ca: addr(40_000),
            sa: addr(5683),
            server_app: None,
        }
    }
}

impl WorldBuilder {
    /// The client is an engine with `config`.
    pub fn client(mut self, config: Config) -> Self {
        self.client = Some(config);
        self
    }

    /// The server is an engine with `config`.
    pub fn server(mut self, config: Config) -> Self {
        self.server = Some(config);
        self
    }

    /// The client is a raw node the test speaks for ([`Sim::inject`]).
    pub fn raw_client(mut self) -> Self {
        self.client = None;
        self
    }

    /// The server is a raw node the test answers for ([`Sim::set_raw_hook`]).
    pub fn raw_server(mut self) -> Self {
        self.server = None;
        self
    }

    /// Where the client lives (only a label).
    pub fn client_addr(mut self, ca: SocketAddr) -> Self {
        self.ca = ca;
        self
    }

    /// Where the server lives (only a label).
    pub fn server_addr(mut self, sa: SocketAddr) -> Self {
        self.sa = sa;
        self
    }

    /// The network's default link (both directions, and any other pair).
    pub fn link(mut self, link: Link) -> Self {
        self.link = link;
        self
    }

    /// A clean link with one-way delay `d`.
    pub fn delay(self, d: Duration) -> Self {
        self.link(Link {
            delay: d,
            ..Link::default()
        })
    }

    /// The server's application (see [`Sim::set_app`]); needs an engine at the server.
    pub fn server_app(mut self, app: impl FnMut(&mut Sim, NodeId, &Event) + 'static) -> Self {
        self.server_app = Some(Box::new(app));
        self
    }

    /// Builds the world, with no state of the test's own.
    pub fn build(self) -> World {
        self.build_with(())
    }

    /// Builds the world with the test's own state `app`.
    ///
    /// The client is added before the server, always: an engine's seed derives from the order
    /// endpoints are added in, so this order is part of what makes a seed reproduce a run.
    pub fn build_with<A>(self, app: A) -> World<A> {
        let mut sim = Sim::new(self.seed);
        sim.set_default_link(self.link);
        let (ca, sa) = (self.ca, self.sa);
        let add = |sim: &mut Sim, config: Option<Config>, at: SocketAddr| match config {
            Some(config) => sim.add_endpoint(at, config),
            None => {
                sim.add_raw(at);
                RAW
            }
        };
        let client = add(&mut sim, self.client, ca);
        let server = add(&mut sim, self.server, sa);
        if let Some(hook) = self.server_app {
            assert_ne!(server, RAW, "a raw server has no application");
            sim.set_app(server, hook);
        }
        World {
            sim,
            client,
            server,
            ca,
            sa,
            app,
        }
    }
}

impl<A> World<A> {
    /// The client sends `packet` to the server.
    #[cfg(feature = "client")]
    pub fn request(&mut self, packet: &Packet) -> RequestId {
        self.sim
            .request(self.client, self.sa, packet)
            .expect("request accepted")
    }

    /// The client registers an observation at the server with `packet`.
    #[cfg(all(feature = "client", feature = "observe"))]
    pub fn observe(&mut self, packet: &Packet) -> RequestId {
        let sa = self.sa;
        self.sim
            .input(self.client, |ep, now| ep.observe(now, sa, packet))
            .expect("observe accepted")
    }

    /// The client sends a Confirmable GET of /x with `payload` to the server.
    #[cfg(feature = "client")]
    pub fn get(&mut self, payload: &[u8]) -> RequestId {
        self.request(&con_get("x", payload))
    }

    /// How the client's request `id` ended: the response's payload, or the error.
    pub fn response(&self, id: RequestId) -> Result<Vec<u8>, ExchangeError> {
        match &self.sim.terminal(self.client, id).event {
            Event::Response { response, .. } => Ok(response.payload.clone()),
            Event::RequestFailed { error, .. } => Err(*error),
            other => panic!("unexpected terminal {other:?}"),
        }
    }

    /// The first session failure `node` reported: when, and why.
    pub fn session_failure(&self, node: NodeId) -> Option<(Instant, FailureReason)> {
        self.sim.events(node).iter().find_map(|l| match &l.event {
            Event::SessionFailed { reason, .. } => Some((l.at, *reason)),
            _ => None,
        })
    }
}

/// The response of a logged `Event::Response`; panics on any other event.
pub fn response_of(l: &Logged) -> &Packet {
    match &l.event {
        Event::Response { response, .. } => response,
        other => panic!("expected a Response, got {other:?}"),
    }
}

/// The representation of /big at [`hello`]: five kilobytes, several blocks.
pub fn big_body() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

/// A server application answering every request with 2.05: [`big_body`] for a request of /big,
/// "got N bytes" for a body larger than 64 bytes, "hello <payload>" otherwise; a request with
/// an Observe option registers an observer of [`TIME`] (without feature `observe`, the plain
/// answer an application without RFC 7641 gives).
#[cfg(feature = "server")]
pub fn hello(sim: &mut Sim, node: NodeId, event: &Event) {
    let Event::Request { id, request, .. } = event else {
        return;
    };
    let big = request
        .get_option(CoapOption::UriPath)
        .is_some_and(|p| p.front().is_some_and(|s| s == b"big"));
    let response = if big {
        content(&big_body())
    } else if request.payload.len() > 64 {
        content(format!("got {} bytes", request.payload.len()).as_bytes())
    } else {
        let mut hello = b"hello ".to_vec();
        hello.extend_from_slice(&request.payload);
        content(&hello)
    };
    let (id, observe) = (*id, request.get_option(CoapOption::Observe).is_some());
    sim.input(node, |ep, now| {
        #[cfg(feature = "observe")]
        if observe {
            return ep.respond_observe(now, id, TIME, &response).map(|_| ());
        }
        #[cfg(not(feature = "observe"))]
        let _ = observe;
        ep.respond(now, id, &response)
    })
    .expect("respond");
}
