//! One DTLS association over dimpl, as a [`SecureChannel`].

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use dimpl::Output;
use rustls_pki_types::TrustAnchor;

use super::hello;
use super::verify::{self, Expect};
use crate::entropy::{with_generator, Generator};
use crate::security::{
    CertificateError, ChannelState, PeerIdentity, RecordSink, SecureChannel, SecurityError,
};
use crate::time::{Duration, Instant};

/// dimpl hands a peer's certificate back through the poll buffer and requires it to fit
/// (it asserts). A certificate arrives in at most 50 handshake fragments, each inside one
/// record of at most [`hello::MAX_RECORD`] bytes (datagrams with larger records are
/// dropped before dimpl sees them), so a buffer of that size always fits. One per thread.
const POLL_BUFFER: usize = 50 * hello::MAX_RECORD;

thread_local! {
    static POLL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// dimpl keeps time as `std::time::Instant`; the engine's instants are offsets from an
/// arbitrary epoch. Any fixed base maps one onto the other: dimpl only compares and adds.
fn base() -> std::time::Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

pub(crate) fn to_std_instant(now: Instant) -> std::time::Instant {
    to_std(now)
}

fn to_std(now: Instant) -> std::time::Instant {
    base() + core::time::Duration::from_micros(now.as_micros())
}

/// Rounded up: a deadline reported a fraction of a microsecond early would find dimpl's
/// timer not yet due, and the caller would wake again and again at the same instant.
fn from_std(t: std::time::Instant) -> Instant {
    let nanos = t.saturating_duration_since(base()).as_nanos();
    Instant::from_micros(u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX))
}

/// Passes on the datagrams a bare dimpl instance produced (the stateless cookie answer).
pub(crate) fn drain(dtls: &mut dimpl::Dtls, sink: &mut dyn RecordSink) {
    POLL.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < POLL_BUFFER {
            buf.resize(POLL_BUFFER, 0);
        }
        // Bounded: a fresh instance has one flight at most.
        for _ in 0..64 {
            match dtls.poll_output(&mut buf[..]) {
                Output::Packet(p) => sink.transmit(p),
                Output::Timeout(_) | Output::BufferTooSmall { .. } => break,
                _ => {}
            }
        }
    });
}

/// A dimpl deadline further away than this is its "nothing to do" placeholder.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// What a server learns from its PSK lookup, so that a failed handshake can say whether
/// the identity was unknown or the key wrong (dimpl reports both as a Finished mismatch,
/// on purpose, to the peer).
pub(crate) struct PskProbe {
    store: std::panic::AssertUnwindSafe<Arc<dyn super::PskStore>>,
    seen: Mutex<Option<(Vec<u8>, bool)>>,
}

impl PskProbe {
    pub(crate) fn new(store: Arc<dyn super::PskStore>) -> Self {
        PskProbe {
            store: std::panic::AssertUnwindSafe(store),
            seen: Mutex::new(None),
        }
    }

    fn seen(&self) -> Option<(Vec<u8>, bool)> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl dimpl::PskResolver for PskProbe {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let key = self.store.key(identity);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((identity.to_vec(), key.is_some()));
        }
        key
    }
}

/// How the peer is authenticated.
pub(crate) enum Check {
    /// By the pre-shared key (the handshake itself proves it).
    Psk(Option<Arc<PskProbe>>),
    /// By its certificate, verified against these anchors (as `Expect` says).
    Certificate(Arc<Vec<TrustAnchor<'static>>>, Expect),
    /// Not at all (a client with verification turned off, or a server that does not ask
    /// for client certificates).
    Nothing,
}

pub(crate) struct DtlsChannel {
    dtls: dimpl::Dtls,
    state: ChannelState,
    generator: Option<Generator>,
    deadline: Option<Instant>,
    client: bool,
    check: Check,
    unix_epoch: Option<u64>,
    /// We sent our Finished (a client waiting for the server's is being refused if it
    /// times out now).
    finished_sent: bool,
    /// The peer's certificate passed `check` (or none was needed).
    certificate_ok: bool,
    identity: Option<PeerIdentity>,
    /// Set when the handshake failed on a check of ours: every later input is refused.
    failed: Option<SecurityError>,
    /// The instant of the input being handled (dimpl's clock).
    last_now: Instant,
    /// The next sequence number of epoch 0 we may use (for an alert of our own).
    next_epoch0_seq: u64,
    /// Our ChangeCipherSpec went: from then on the peer reads our epoch 1 only.
    change_cipher_spec_sent: bool,
}

impl DtlsChannel {
    pub(crate) fn new(
        dtls: dimpl::Dtls,
        generator: Generator,
        client: bool,
        check: Check,
        unix_epoch: Option<u64>,
    ) -> Self {
        let certificate_ok = !matches!(check, Check::Certificate(..));
        DtlsChannel {
            dtls,
            state: ChannelState::Handshaking,
            generator: Some(generator),
            deadline: None,
            client,
            check,
            unix_epoch,
            finished_sent: false,
            certificate_ok,
            identity: None,
            failed: None,
            last_now: Instant::ZERO,
            next_epoch0_seq: 0,
            change_cipher_spec_sent: false,
        }
    }

    /// Runs `op` on dimpl at `now` and drains what it produced.
    pub(crate) fn drive(
        &mut self,
        now: Instant,
        sink: &mut dyn RecordSink,
        op: impl FnOnce(&mut dimpl::Dtls) -> Result<(), dimpl::Error>,
    ) -> Result<(), SecurityError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.state == ChannelState::Closed {
            return Ok(());
        }
        self.last_now = self.last_now.max(now);
        let now = self.last_now;
        let dtls = &mut self.dtls;
        let result = with_generator(&mut self.generator, || {
            dtls.handle_timeout(to_std(now))?;
            op(dtls)
        });
        if let Err(e) = result {
            let e = self.map_error(&e);
            return Err(self.refuse(e, sink));
        }
        self.poll(now, sink)
    }

    /// Ends a handshake that failed and tells the peer why with a fatal alert, when the
    /// failure is one the peer should hear about (RFC 5246 §7.2.2) — dimpl sends none itself,
    /// which would leave a refused client waiting for its handshake to time out. The alert
    /// goes as a plaintext record of epoch 0: we have not sent our ChangeCipherSpec, so
    /// that is the epoch the peer reads (a server refusing a client's Finished, a client
    /// refusing a server's certificate).
    fn refuse(&mut self, e: SecurityError, sink: &mut dyn RecordSink) -> SecurityError {
        if self.state == ChannelState::Handshaking && !self.change_cipher_spec_sent {
            if let Some(description) = alert_for(e) {
                let seq = self.next_epoch0_seq.to_be_bytes();
                let mut record = [21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, description];
                record[5..11].copy_from_slice(&seq[2..]);
                sink.transmit(&record);
            }
        }
        self.fail(e)
    }

    fn fail(&mut self, e: SecurityError) -> SecurityError {
        self.failed = Some(e);
        self.state = ChannelState::Closed;
        self.deadline = None;
        e
    }

    fn poll(&mut self, now: Instant, sink: &mut dyn RecordSink) -> Result<(), SecurityError> {
        let mut connected = false;
        let mut refused = None;
        POLL.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < POLL_BUFFER {
                buf.resize(POLL_BUFFER, 0);
            }
            let dtls = &mut self.dtls;
            let generator = &mut self.generator;
            loop {
                let output = with_generator(generator, || dtls.poll_output(&mut buf[..]));
                match output {
                    Output::Packet(p) => {
                        if self.client && hello::has_change_cipher_spec(p) {
                            self.finished_sent = true;
                        }
                        note_sent(
                            &mut self.next_epoch0_seq,
                            &mut self.change_cipher_spec_sent,
                            p,
                        );
                        sink.transmit(p);
                    }
                    Output::Timeout(t) => {
                        let t = from_std(t);
                        self.deadline = (t.saturating_duration_since(now) < IDLE).then_some(t);
                        break;
                    }
                    Output::Connected => connected = true,
                    Output::PeerCert(der) => {
                        let unix_now = self.unix_epoch.map(|e| e + now.as_micros() / 1_000_000);
                        if let Err(e) = check_certificate(&self.check, unix_now, der) {
                            refused = Some(e);
                            break;
                        }
                        self.certificate_ok = true;
                        self.identity = Some(PeerIdentity::Certificate(der.to_vec()));
                    }
                    Output::ApplicationData(data)
                        if self.state == ChannelState::Open || connected =>
                    {
                        sink.deliver(data);
                    }
                    Output::CloseNotify => self.state = ChannelState::Closed,
                    Output::BufferTooSmall { .. } => {
                        // Cannot happen with a buffer of POLL_BUFFER: records are capped.
                        refused = Some(SecurityError::Internal);
                        break;
                    }
                    _ => {}
                }
            }
        });
        if let Some(e) = refused {
            let _ = self.dtls.close();
            return Err(self.refuse(e, sink));
        }
        if connected && self.state == ChannelState::Handshaking {
            if !self.certificate_ok {
                let _ = self.dtls.close();
                let e = SecurityError::Certificate(CertificateError::Missing);
                return Err(self.refuse(e, sink));
            }
            if let Check::Psk(Some(probe)) = &self.check {
                self.identity = probe
                    .seen()
                    .map(|(identity, _)| PeerIdentity::PreSharedKey(identity));
            }
            self.state = ChannelState::Open;
        }
        Ok(())
    }

    /// A typed reason for one of dimpl's (always fatal) errors.
    fn map_error(&self, e: &dimpl::Error) -> SecurityError {
        use dimpl::Error as E;
        use dimpl::SecurityError as S;
        let psk_seen = match &self.check {
            Check::Psk(Some(probe)) => probe.seen(),
            _ => None,
        };
        let finished_failed = || match &psk_seen {
            Some((_, false)) => SecurityError::UnknownPskIdentity,
            Some((_, true)) => SecurityError::PskMismatch,
            None => SecurityError::FinishedMismatch,
        };
        match e {
            E::Timeout(_) if self.client && self.finished_sent => {
                SecurityError::CredentialsRejected
            }
            E::Timeout(_) => SecurityError::HandshakeTimeout,
            // decrypt_error, bad_record_mac or unknown_psk_identity in answer to our Finished:
            // the server refused our key.
            E::SecurityError(S::FatalAlert {
                description: 20 | 51 | 115,
            }) if self.client && self.finished_sent => SecurityError::CredentialsRejected,
            E::SecurityError(S::FatalAlert { description }) => SecurityError::Alert(*description),
            E::SecurityError(
                S::ClientFinishedVerificationFailed | S::ServerFinishedVerificationFailed,
            ) => finished_failed(),
            // A record of the peer's Finished that does not decrypt: the keys differ.
            E::CryptoError(_) if psk_seen.is_some() => finished_failed(),
            E::SecurityError(S::NoMutuallyAcceptableCipherSuite | S::NoCommonCipherSuite) => {
                SecurityError::NoCommonCipherSuite
            }
            E::PskError(dimpl::PskError::ResolverReturnedNoKey) => {
                SecurityError::UnknownPskIdentity
            }
            E::CertificateError(
                dimpl::CertificateError::NoClientCertificateReceived
                | dimpl::CertificateError::NoServerCertificateReceived,
            ) => SecurityError::Certificate(CertificateError::Missing),
            E::CertificateError(_) => SecurityError::Certificate(CertificateError::Malformed),
            E::RenegotiationAttempt => SecurityError::Renegotiation,
            E::SecurityError(_) | E::UnexpectedMessage(_) | E::IncompleteServerHello => {
                SecurityError::Protocol
            }
            _ => SecurityError::Internal,
        }
    }
}

/// What `note_sent` records, as a free function so that it can run while dimpl's output
/// borrows the channel.
fn note_sent(next_epoch0_seq: &mut u64, change_cipher_spec_sent: &mut bool, datagram: &[u8]) {
    let mut rest = datagram;
    while let Some(h) = rest.get(..13) {
        if h[3..5] == [0, 0] {
            let mut seq = [0; 8];
            seq[2..].copy_from_slice(&h[5..11]);
            *next_epoch0_seq = (*next_epoch0_seq).max(u64::from_be_bytes(seq) + 1);
        }
        if h[0] == 20 {
            *change_cipher_spec_sent = true;
        }
        let len = usize::from(u16::from_be_bytes([h[11], h[12]]));
        rest = rest.get(13 + len..).unwrap_or(&[]);
    }
}

/// The fatal alert (RFC 5246 §7.2.2) that tells a peer why we refused its handshake, if it
/// should hear one. PSK failures are all `decrypt_error`, so that nobody can probe which
/// identities exist (RFC 4279 §2).
fn alert_for(e: SecurityError) -> Option<u8> {
    Some(match e {
        SecurityError::UnknownPskIdentity
        | SecurityError::PskMismatch
        | SecurityError::FinishedMismatch => 51,
        SecurityError::Certificate(c) => match c {
            CertificateError::UnknownIssuer => 48,
            CertificateError::Expired | CertificateError::NotYetValid => 45,
            CertificateError::UnsupportedAlgorithm | CertificateError::WrongUsage => 43,
            CertificateError::Missing => 40,
            CertificateError::Malformed
            | CertificateError::NameMismatch
            | CertificateError::BadSignature => 42,
            _ => 46,
        },
        SecurityError::NoCommonCipherSuite => 40,
        SecurityError::Protocol => 10,
        SecurityError::Internal => 80,
        _ => return None,
    })
}

/// Checks the peer's certificate at the time it arrives.
fn check_certificate(
    check: &Check,
    unix_now: Option<u64>,
    der: &[u8],
) -> Result<(), SecurityError> {
    match check {
        Check::Certificate(anchors, expect) => {
            verify::verify(der, anchors, unix_now, expect).map_err(SecurityError::Certificate)
        }
        _ => Ok(()),
    }
}

impl SecureChannel for DtlsChannel {
    fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError> {
        if !hello::records_ok(datagram) {
            log::debug!("DTLS: malformed or oversized record framing; datagram dropped");
            return Ok(());
        }
        self.drive(now, sink, |d| d.handle_packet(datagram))
    }

    fn handle_timeout(
        &mut self,
        now: Instant,
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError> {
        self.drive(now, sink, |_| Ok(()))
    }

    fn seal(&mut self, message: &[u8], sink: &mut dyn RecordSink) -> Result<(), SecurityError> {
        if self.state != ChannelState::Open {
            return Ok(()); // see the trait: lost, and retransmitted on its schedule
        }
        let dtls = &mut self.dtls;
        let sent = with_generator(&mut self.generator, || dtls.send_application_data(message));
        if let Err(e) = sent {
            return Err(self.fail(self.map_error(&e)));
        }
        // Sealing happens within the input being handled: dimpl's clock stays where it is.
        self.poll(self.last_now, sink)
    }

    fn close(&mut self, sink: &mut dyn RecordSink) {
        if self.state == ChannelState::Open {
            let _ = self.dtls.close();
            let _ = self.poll(self.last_now, sink);
        }
        self.state = ChannelState::Closed;
        self.deadline = None;
    }

    fn state(&self) -> ChannelState {
        self.state
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ChannelState::Closed {
            None
        } else {
            self.deadline
        }
    }

    fn peer_identity(&self) -> Option<PeerIdentity> {
        self.identity.clone()
    }
}
