//! One TLS connection over rustls' unbuffered API, as a [`SecureChannel`] of a stream: bytes
//! from the connection in, plaintext bytes (the CoAP frames) out, and the reverse.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::cell::Cell;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::UnixTime;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncryptError, UnbufferedStatus};

use crate::entropy::{with_generator, Generator};
use crate::security::{
    CertificateError, ChannelState, PeerIdentity, RecordSink, SecureChannel, SecurityError,
};
use crate::time::Instant;

/// The most a TLS record takes on the wire (RFC 8446 §5.2, RFC 5246 §6.2.3: 2^14 + 2048
/// bytes of ciphertext and a 5-byte header). Input is fed in slices that keep the undecoded
/// bytes within this, so a connection never buffers more than one record of input.
const MAX_RECORD: usize = 16384 + 2048 + 5;

/// A pump turns at most this many times per input: each turn consumes a record or emits
/// one, so a bound this large is never reached by a well-formed exchange.
const MAX_TURNS: usize = 4096;

thread_local! {
    /// Wall-clock time (µs since the Unix epoch) of the call in progress, for rustls'
    /// certificate checks.
    static WALL: Cell<Option<u64>> = const { Cell::new(None) };
}

/// rustls' clock: the time of the input being handled, from the endpoint's
/// [`set_unix_time`](crate::Endpoint::set_unix_time); none without it (certificates are then
/// refused with [`CertificateError::NoClock`]).
#[derive(Debug)]
pub(super) struct WallClock;

impl rustls::time_provider::TimeProvider for WallClock {
    fn current_time(&self) -> Option<UnixTime> {
        WALL.with(Cell::get)
            .map(|micros| UnixTime::since_unix_epoch(core::time::Duration::from_micros(micros)))
    }
}

/// The two kinds of unbuffered connection, driven by the same pump.
trait Process {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn handshaking(&self) -> bool;
    fn peer_certificate(&self) -> Option<Vec<u8>>;
}

impl Process for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.peer_certificates()?.first().map(|c| c.to_vec())
    }
}

impl Process for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.peer_certificates()?.first().map(|c| c.to_vec())
    }
}

enum Conn {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
}

/// What a pump is to do once the connection can carry application data.
#[derive(Clone, Copy)]
enum Want<'a> {
    Nothing,
    Seal(&'a [u8]),
    Close,
}

/// Where a pump stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It needs more bytes from the peer.
    Blocked,
    /// Application data can flow.
    Writable,
    /// Both sides closed.
    Closed,
}

pub(super) struct TlsChannel {
    conn: Conn,
    client: bool,
    generator: Option<Generator>,
    unix_epoch: Option<u64>,
    /// The handshake must complete by then.
    deadline: Instant,
    state: ChannelState,
    /// Bytes from the peer not yet consumed by rustls (less than one record).
    incoming: Vec<u8>,
    /// What the current call produces for the peer: handed to the sink in one piece.
    outgoing: Vec<u8>,
    /// Set on a fatal error: every later input is refused with it.
    failed: Option<SecurityError>,
    identity: Option<PeerIdentity>,
    /// The instant of the last input (the wall clock of a later seal or close).
    now: Instant,
}

impl TlsChannel {
    pub(super) fn client(
        conn: UnbufferedClientConnection,
        generator: Option<Generator>,
        unix_epoch: Option<u64>,
        deadline: Instant,
    ) -> Self {
        Self::new(
            Conn::Client(Box::new(conn)),
            true,
            generator,
            unix_epoch,
            deadline,
        )
    }

    pub(super) fn server(
        conn: UnbufferedServerConnection,
        generator: Option<Generator>,
        unix_epoch: Option<u64>,
        deadline: Instant,
    ) -> Self {
        Self::new(
            Conn::Server(Box::new(conn)),
            false,
            generator,
            unix_epoch,
            deadline,
        )
    }

    fn new(
        conn: Conn,
        client: bool,
        generator: Option<Generator>,
        unix_epoch: Option<u64>,
        deadline: Instant,
    ) -> Self {
        TlsChannel {
            conn,
            client,
            generator,
            unix_epoch,
            deadline,
            state: ChannelState::Handshaking,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            failed: None,
            identity: None,
            now: Instant::ZERO,
        }
    }

    /// Runs rustls over what is buffered, with the generator lent and the wall clock set, and
    /// hands what it produced to the sink.
    fn run(
        &mut self,
        now: Instant,
        want: Want<'_>,
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.now = self.now.max(now);
        let wall = self
            .unix_epoch
            .map(|e| e.saturating_mul(1_000_000).saturating_add(now.as_micros()));
        WALL.with(|w| w.set(wall));
        let TlsChannel {
            conn,
            generator,
            incoming,
            outgoing,
            ..
        } = self;
        let result = with_generator(generator, || match conn {
            Conn::Client(c) => pump(&mut **c, incoming, outgoing, want, sink),
            Conn::Server(c) => pump(&mut **c, incoming, outgoing, want, sink),
        });
        WALL.with(|w| w.set(None));
        if !self.outgoing.is_empty() {
            sink.transmit(&self.outgoing);
            self.outgoing.clear();
        }
        let (handshaking, certificate) = match &self.conn {
            Conn::Client(c) => (c.handshaking(), c.peer_certificate()),
            Conn::Server(c) => (c.handshaking(), c.peer_certificate()),
        };
        match result {
            Err(e) => {
                let e = map_error(&e, self.client);
                self.failed = Some(e);
                self.state = ChannelState::Closed;
                Err(e)
            }
            Ok(Stop::Closed) => {
                self.state = ChannelState::Closed;
                Ok(())
            }
            Ok(_) if matches!(want, Want::Close) => {
                self.state = ChannelState::Closed;
                Ok(())
            }
            Ok(_) => {
                if self.state == ChannelState::Handshaking && !handshaking {
                    self.state = ChannelState::Open;
                    self.identity = certificate.map(PeerIdentity::Certificate);
                }
                Ok(())
            }
        }
    }
}

/// Drives one connection until it needs input from the peer or has done `want`.
fn pump<C: Process>(
    conn: &mut C,
    incoming: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    mut want: Want<'_>,
    sink: &mut dyn RecordSink,
) -> Result<Stop, rustls::Error> {
    for _ in 0..MAX_TURNS {
        let status = conn.process(&mut incoming[..]);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => {
                incoming.drain(..discard.min(incoming.len()));
                send_alert(conn, incoming, outgoing);
                return Err(e);
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut read) => {
                while let Some(record) = read.next_record() {
                    let record = record?;
                    discard += record.discard;
                    sink.deliver(record.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let start = outgoing.len();
                outgoing.resize(start + 4096, 0);
                let written = loop {
                    match encode.encode(&mut outgoing[start..]) {
                        Ok(n) => break n,
                        Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => {
                            outgoing.resize(start + s.required_size, 0);
                        }
                        Err(rustls::unbuffered::EncodeError::AlreadyEncoded) => break 0,
                    }
                };
                outgoing.truncate(start + written);
                None
            }
            // The bytes go out when the call returns, in order with everything else.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Stop::Blocked),
            ConnectionState::PeerClosed => None,
            ConnectionState::Closed => Some(Stop::Closed),
            ConnectionState::WriteTraffic(mut write) => {
                match want {
                    Want::Nothing => {}
                    Want::Seal(message) => {
                        encrypt(outgoing, message, |m, out| write.encrypt(m, out))?
                    }
                    Want::Close => {
                        let start = outgoing.len();
                        outgoing.resize(start + 64, 0);
                        let n = write
                            .queue_close_notify(&mut outgoing[start..])
                            .unwrap_or(0);
                        outgoing.truncate(start + n);
                    }
                }
                want = Want::Nothing;
                Some(Stop::Writable)
            }
            _ => Some(Stop::Blocked),
        };
        incoming.drain(..discard.min(incoming.len()));
        if let Some(stop) = stop {
            return Ok(stop);
        }
    }
    Err(rustls::Error::General(
        "TLS state machine did not settle".into(),
    ))
}

/// Seals `message` into records at the end of `outgoing`.
fn encrypt(
    outgoing: &mut Vec<u8>,
    message: &[u8],
    mut seal: impl FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let start = outgoing.len();
    // Per record of 2^14 bytes at most: header, tag, content type (TLS 1.3) or explicit
    // nonce (TLS 1.2); the exact size is asked for if this falls short.
    let records = message.len() / 16384 + 1;
    outgoing.resize(start + message.len() + records * 40, 0);
    loop {
        match seal(message, &mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) => outgoing.resize(start + s.required_size, 0),
            Err(EncryptError::EncryptExhausted) => {
                outgoing.truncate(start);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

/// After a fatal error rustls has queued its alert: encode it for the peer. One call only:
/// the alert is all a failed input queues in practice, and a second call would feed rustls
/// the rest of the bad input again. (The same buffer goes back in: rustls may hold ranges of
/// it.)
fn send_alert<C: Process>(conn: &mut C, incoming: &mut [u8], outgoing: &mut Vec<u8>) {
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = conn.process(incoming).state {
        let start = outgoing.len();
        outgoing.resize(start + 64, 0);
        let n = encode.encode(&mut outgoing[start..]).unwrap_or(0);
        outgoing.truncate(start + n);
    }
}

impl SecureChannel for TlsChannel {
    fn handle_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut rest = bytes;
        loop {
            let room = MAX_RECORD.saturating_sub(self.incoming.len());
            if room == 0 {
                // rustls consumes every complete record, so a full buffer is a record
                // longer than TLS allows (rustls says so first; this is the backstop).
                self.failed = Some(SecurityError::Protocol);
                self.state = ChannelState::Closed;
                return Err(SecurityError::Protocol);
            }
            let take = rest.len().min(room);
            self.incoming.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.run(now, Want::Nothing, sink)?;
            if rest.is_empty() || self.state == ChannelState::Closed {
                return Ok(());
            }
        }
    }

    fn handle_timeout(
        &mut self,
        now: Instant,
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError> {
        if self.state == ChannelState::Handshaking && now >= self.deadline {
            self.failed = Some(SecurityError::HandshakeTimeout);
            self.state = ChannelState::Closed;
            return Err(SecurityError::HandshakeTimeout);
        }
        // The first call of a client sends its ClientHello.
        self.run(now, Want::Nothing, sink)
    }

    fn seal(&mut self, message: &[u8], sink: &mut dyn RecordSink) -> Result<(), SecurityError> {
        if self.state != ChannelState::Open {
            return Ok(());
        }
        self.run(self.now, Want::Seal(message), sink)
    }

    fn close(&mut self, sink: &mut dyn RecordSink) {
        if self.state == ChannelState::Open {
            let _ = self.run(self.now, Want::Close, sink);
        }
        self.state = ChannelState::Closed;
    }

    fn state(&self) -> ChannelState {
        self.state
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.state == ChannelState::Handshaking).then_some(self.deadline)
    }

    fn peer_identity(&self) -> Option<PeerIdentity> {
        self.identity.clone()
    }
}

/// What a rustls error means for the application.
pub(super) fn map_error(error: &rustls::Error, client: bool) -> SecurityError {
    use rustls::CertificateError as C;
    log::debug!("TLS {}: {error}", if client { "client" } else { "server" });
    match error {
        rustls::Error::InvalidCertificate(e) => SecurityError::Certificate(match e {
            C::BadEncoding => CertificateError::Malformed,
            C::Expired | C::ExpiredContext { .. } => CertificateError::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => CertificateError::NotYetValid,
            C::UnknownIssuer => CertificateError::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => CertificateError::NameMismatch,
            C::BadSignature => CertificateError::BadSignature,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => CertificateError::WrongUsage,
            C::UnsupportedSignatureAlgorithmContext { .. } => {
                CertificateError::UnsupportedAlgorithm
            }
            _ => CertificateError::Other,
        }),
        rustls::Error::NoCertificatesPresented => {
            SecurityError::Certificate(CertificateError::Missing)
        }
        rustls::Error::FailedToGetCurrentTime => {
            SecurityError::Certificate(CertificateError::NoClock)
        }
        // The peer's way of saying it speaks none of our versions (RFC 8446 §6.2).
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion) => {
            SecurityError::NoCommonVersion
        }
        rustls::Error::AlertReceived(alert) => SecurityError::Alert(u8::from(*alert)),
        rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
            | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled,
        ) => SecurityError::NoCommonVersion,
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
            SecurityError::NoCommonCipherSuite
        }
        rustls::Error::FailedToGetRandomBytes
        | rustls::Error::General(_)
        | rustls::Error::EncryptError => SecurityError::Internal,
        _ => SecurityError::Protocol,
    }
}
