//! The engine's output queues: transmits (with the record needed to route their send
//! results back) and events.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddr;

use coap_lite::{MessageType, Packet};

use crate::codec;
use crate::config::Config;
use crate::error::Error;
use crate::event::Event;
use crate::rng::Rng;
use crate::transmit::{Datagram, DatagramPool, Transmit, TransmitId};

/// Which session a transmit belongs to: slot index and that slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// What a transmit carried, so that a failed send can be charged to the right message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransmitRecord {
    pub(crate) peer: SocketAddr,
    pub(crate) session: Option<SessionKey>,
    /// The CoAP message it carried; None for a security layer's own records (handshake
    /// flights, alerts).
    pub(crate) message_id: Option<u16>,
}

/// What a CoAP-over-TCP endpoint asks its adapter to do with connections (RFC 8323); see
/// [`Endpoint::poll_stream_command`](crate::Endpoint::poll_stream_command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamCommand {
    /// Open a connection to this peer and report the outcome
    /// ([`Endpoint::handle_connected`](crate::Endpoint::handle_connected) or
    /// [`Endpoint::handle_connect_failed`](crate::Endpoint::handle_connect_failed)).
    Connect(SocketAddr),
    /// Close the connection with this peer once the writes already polled are done; the
    /// engine has forgotten it.
    Close(SocketAddr),
}

pub(crate) struct Outputs {
    transmits: VecDeque<Transmit>,
    commands: VecDeque<StreamCommand>,
    events: VecDeque<Event>,
    /// Records of the most recent transmits; `records[i]` belongs to id `records_base + i`.
    records: VecDeque<TransmitRecord>,
    records_base: u64,
    next_transmit: u64,
    /// Reused encode buffer, so building a message allocates only its final `Datagram`.
    scratch: Vec<u8>,
    /// Where a message's final `Datagram` comes from, when one of its length is free.
    pub(crate) pool: DatagramPool,
    max_queued_transmits: usize,
    /// The endpoint's transport is a stream: every transmit is part of a byte stream.
    stream: bool,
    tracked_transmits: usize,
    /// Plaintext messages a security layer opened from one datagram, back to back, and
    /// their lengths; reused so that a secure datagram allocates nothing here.
    #[cfg(feature = "security")]
    pub(crate) inbox: Vec<u8>,
    #[cfg(feature = "security")]
    pub(crate) inbox_lens: Vec<usize>,
}

impl Outputs {
    pub(crate) fn new(config: &Config) -> Self {
        Outputs {
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            records: VecDeque::new(),
            records_base: 0,
            next_transmit: 0,
            scratch: Vec::with_capacity(256),
            pool: DatagramPool::new(config.limits.recycled_datagrams),
            max_queued_transmits: config.limits.max_queued_transmits,
            stream: config.transport == crate::config::Transport::Tcp,
            tracked_transmits: config.limits.tracked_transmits,
            #[cfg(feature = "security")]
            inbox: Vec::new(),
            #[cfg(feature = "security")]
            inbox_lens: Vec::new(),
        }
    }

    /// An id for a message that produced no transmit (sealed before its secure channel was
    /// open, or written before its connection opened): send results can never name it, so
    /// nothing is recorded.
    pub(crate) fn reserve_id(&mut self) -> TransmitId {
        let id = TransmitId(self.next_transmit);
        self.next_transmit += 1;
        if self.records.len() >= self.tracked_transmits {
            self.records.pop_front();
            self.records_base += 1;
        }
        // Keeps `records[i]` ↔ id `records_base + i` aligned; an unroutable placeholder.
        self.records.push_back(TransmitRecord {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            session: None,
            message_id: None,
        });
        id
    }

    pub(crate) fn send(&mut self, record: TransmitRecord, payload: Datagram) -> TransmitId {
        let id = TransmitId(self.next_transmit);
        self.next_transmit += 1;
        if self.records.len() >= self.tracked_transmits {
            self.records.pop_front();
            self.records_base += 1;
        }
        self.records.push_back(record);
        if self.transmits.len() >= self.max_queued_transmits && !self.stream {
            // The adapter is not draining; treat the oldest as lost on the wire. (A stream
            // loses nothing on the wire: its writes are bounded by `max_unwritten_bytes`
            // instead, and dropping one would cut a hole in the byte stream.)
            self.transmits.pop_front();
        }
        self.transmits.push_back(Transmit {
            id,
            destination: record.peer,
            payload,
        });
        id
    }

    pub(crate) fn record(&self, id: TransmitId) -> Option<TransmitRecord> {
        let index = id.0.checked_sub(self.records_base)?;
        self.records.get(usize::try_from(index).ok()?).copied()
    }

    pub(crate) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    pub(crate) fn command(&mut self, command: StreamCommand) {
        self.commands.push_back(command);
    }

    pub(crate) fn poll_command(&mut self) -> Option<StreamCommand> {
        self.commands.pop_front()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    pub(crate) fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Encodes `packet` as `mtype`/`mid`, enforcing `max_message_size`.
    pub(crate) fn encode_packet(
        &mut self,
        packet: &Packet,
        mtype: MessageType,
        mid: u16,
        token: &[u8],
        max: usize,
    ) -> Result<Datagram, Error> {
        self.encode_with(max, |out| {
            codec::encode_packet_as(out, packet, mtype, mid, token)
        })
    }

    /// Encodes a message from its parts (options in ascending number order), enforcing `max`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_parts<'o>(
        &mut self,
        mtype: MessageType,
        code: u8,
        mid: u16,
        token: &[u8],
        options: impl Iterator<Item = (u16, &'o [u8])>,
        payload: &[u8],
        max: usize,
    ) -> Result<Datagram, Error> {
        self.encode_with(max, |out| {
            codec::encode(out, mtype, code, mid, token, options, payload)
        })
    }

    /// Encodes a message with `write` (which appends it to the buffer it is given, from
    /// `codec::begin` on), enforcing `max`. Each way of encoding is a few calls to the
    /// codec's shared pieces; the rest is here, once.
    pub(crate) fn encode_with(
        &mut self,
        max: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), codec::EncodeError>,
    ) -> Result<Datagram, Error> {
        self.scratch.clear();
        let written = write(&mut self.scratch);
        self.encoded(written, max)
    }

    /// The datagram just encoded into `scratch`, if it was and fits `max`.
    #[inline(never)]
    fn encoded(
        &mut self,
        written: Result<(), codec::EncodeError>,
        max: usize,
    ) -> Result<Datagram, Error> {
        written.map_err(|e| match e {
            codec::EncodeError::TokenTooLong(_) => Error::TokenTooLong,
            _ => Error::OptionTooLong,
        })?;
        if self.scratch.len() > max {
            return Err(Error::MessageTooLarge(self.scratch.len()));
        }
        Ok(self.pool.make(&self.scratch))
    }

    /// Encodes a message the engine composes itself (no options).
    pub(crate) fn encode_simple(
        &mut self,
        mtype: MessageType,
        code: u8,
        mid: u16,
        token: &[u8],
        payload: &[u8],
    ) -> Datagram {
        let written = self.encode_with(usize::MAX, |out| {
            codec::begin(out, mtype, code, mid, token, payload.len())?;
            codec::push_payload(out, payload);
            Ok(())
        });
        match written {
            Ok(bytes) => bytes,
            // Unreachable for engine-built messages (tokens are ≤ 8 bytes, no options), but
            // an empty message is still a correct fallback rather than a panic.
            Err(_) => self.encode_empty(mtype, mid),
        }
    }

    pub(crate) fn encode_empty(&mut self, mtype: MessageType, mid: u16) -> Datagram {
        self.scratch.clear();
        codec::encode_empty(&mut self.scratch, mtype, mid);
        self.pool.make(&self.scratch)
    }
}

/// Durations derived from the configuration once (their u128 arithmetic is costly on
/// microcontrollers and they were recomputed per message).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Derived {
    pub(crate) exchange_lifetime: crate::time::Duration,
    pub(crate) non_lifetime: crate::time::Duration,
    pub(crate) initial_spread: crate::time::Duration,
}

impl Derived {
    pub(crate) fn new(config: &Config) -> Self {
        let p = &config.transmission;
        Derived {
            exchange_lifetime: p.exchange_lifetime(),
            non_lifetime: p.non_lifetime(),
            initial_spread: p.max_initial_timeout().saturating_sub(p.ack_timeout),
        }
    }
}

/// Everything a session needs from its endpoint while it handles an input.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) derived: &'a Derived,
    pub(crate) rng: &'a mut Rng,
    pub(crate) out: &'a mut Outputs,
    pub(crate) next_id: &'a mut u64,
    pub(crate) observe: &'a mut crate::observe::Registry,
    /// The largest message the session may send: `Config::max_message_size`, or less on a
    /// connection whose peer announced a smaller Max-Message-Size (RFC 8323 §5.3.1).
    pub(crate) max_message_size: usize,
    /// What the session's transport means for block-wise transfers (BERT on streams).
    pub(crate) path: crate::block::Path,
}

/// A security layer's outputs for one session (or one handshake): records become transmits
/// charged to `record`, opened messages go to the inbox.
#[cfg(feature = "security")]
pub(crate) struct ChannelSink<'a> {
    pub(crate) out: &'a mut Outputs,
    pub(crate) record: TransmitRecord,
    /// The last transmit made, so a sealed message can be matched to its send result.
    pub(crate) last: Option<TransmitId>,
}

#[cfg(feature = "security")]
impl<'a> ChannelSink<'a> {
    pub(crate) fn new(out: &'a mut Outputs, record: TransmitRecord) -> Self {
        ChannelSink {
            out,
            record,
            last: None,
        }
    }
}

#[cfg(feature = "security")]
impl crate::security::RecordSink for ChannelSink<'_> {
    fn transmit(&mut self, datagram: &[u8]) {
        let datagram = self.out.pool.make(datagram);
        self.last = Some(self.out.send(self.record, datagram));
    }

    fn deliver(&mut self, message: &[u8]) {
        self.out.inbox.extend_from_slice(message);
        self.out.inbox_lens.push(message.len());
    }
}
