//! An in-memory point-to-point IP link between two embassy-net stacks (medium IP, no ARP),
//! with a switch that cuts it: while cut, both directions silently drop every packet, like a
//! radio out of range. Single-threaded (`Rc`), for one executor. Shared by the adapter's tests
//! and the `embassy-hosted` example.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::task::{Context, Waker};

use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_net::{Config, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};

#[derive(Default)]
struct Wire {
    /// Packets waiting for side 0 and side 1.
    inbox: [VecDeque<Vec<u8>>; 2],
    wakers: [Option<Waker>; 2],
    cut: bool,
}

/// Both ends of the link.
#[derive(Clone, Default)]
pub struct Link(Rc<RefCell<Wire>>);

impl Link {
    /// A new, connected link.
    pub fn new() -> Self {
        Self::default()
    }

    /// The driver for end `side` (0 or 1).
    pub fn port(&self, side: usize) -> Port {
        Port {
            link: self.clone(),
            side,
        }
    }

    /// Cuts (`true`) or restores (`false`) the link; packets in flight are lost on a cut.
    pub fn set_cut(&self, cut: bool) {
        let mut wire = self.0.borrow_mut();
        wire.cut = cut;
        if cut {
            wire.inbox.iter_mut().for_each(VecDeque::clear);
        }
    }
}

/// One end of a [`Link`]: an `embassy_net_driver::Driver`.
pub struct Port {
    link: Link,
    side: usize,
}

/// A received packet.
pub struct Rx(Vec<u8>);

/// Room for one packet to the other end.
pub struct Tx {
    link: Link,
    to: usize,
}

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        let mut wire = self.link.0.borrow_mut();
        if !wire.cut {
            wire.inbox[self.to].push_back(packet);
            if let Some(w) = wire.wakers[self.to].take() {
                w.wake();
            }
        }
        r
    }
}

impl Driver for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx)> {
        let mut wire = self.link.0.borrow_mut();
        match wire.inbox[self.side].pop_front() {
            Some(packet) => Some((Rx(packet), self.tx())),
            None => {
                wire.wakers[self.side] = Some(cx.waker().clone());
                None
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx> {
        Some(self.tx())
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1280;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ip
    }
}

impl Port {
    fn tx(&self) -> Tx {
        Tx {
            link: self.link.clone(),
            to: 1 - self.side,
        }
    }
}

/// An embassy-net stack on `port` with the static address `ip`/24 and room for `SOCKETS`
/// sockets.
pub fn stack<'d, const SOCKETS: usize>(
    port: Port,
    ip: Ipv4Addr,
    resources: &'d mut StackResources<SOCKETS>,
    seed: u64,
) -> (Stack<'d>, Runner<'d, Port>) {
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    embassy_net::new(port, config, resources, seed)
}
