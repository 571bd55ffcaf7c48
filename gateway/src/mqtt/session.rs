//! One MQTT connection's life after its CONNACK: presence → the persistent session's
//! subscriptions → live, the same promises as a WebSocket session, written as MQTT
//! packets.
//!
//! - Subscribing to `kurir/user` replays the user's unacked inbox (every connection,
//!   clean session or not); stored notifications go out at the granted QoS (1 at most),
//!   everything else (not stored, topic, broadcast) at QoS 0. Before that subscription
//!   the user's notifications are not sent: stored ones stay in the inbox for its replay.
//! - A PUBACK is the ack: its packet id maps back to the notification ([`Inflight`]),
//!   whose inbox entry goes and whose `ACKED` receipt is emitted.
//! - At most [`super::inflight::WINDOW`] QoS 1 publishes await their PUBACK; beyond,
//!   the session waits for acks, at most the write stall timeout.
//! - Devices do not publish: a PUBLISH closes the connection.
//! - Bounded like the other transports: every write fails after the write stall
//!   timeout without progress and gives way to a close request (drain, `Disconnect`,
//!   slow consumer); packets are rate limited (PUBACKs of our publishes are free) and
//!   at most [`super::MAX_PACKET_BYTES`]; keepalive closes a client silent for 1.5 ×
//!   its keep-alive. MQTT 3.1.1 has no server DISCONNECT: closing is closing the socket.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    Packet, PingResp, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, debug_span, warn, Instrument};

use super::inflight::Inflight;
use super::persist::{Named, Saved};
use super::topics::{self, Filter};
use super::MAX_PACKET_BYTES;
use crate::auth::Identity;
use crate::client::{Client, Transport};
use crate::hub::{Queued, Registration};
use crate::protocol::close::TOKEN_EXPIRED;
use crate::protocol::CloseReason;
use crate::state::AppState;
use crate::telemetry;
use crate::ws::stall::{Stall, Stalled};

/// How long a session told to close lets a write in flight finish.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Queued notifications written per batch at most.
const WRITE_BATCH: usize = 64;

/// Rate limiter unit: a thousandth of a packet.
const MILLI: u64 = 1000;

/// Why a connection ends on a PUBLISH from the device.
const NO_PUBLISH: &str = "devices do not publish";

/// What the handshake hands over.
pub struct Opened {
    pub identity: Identity,
    pub registration: Registration,
    /// Seconds (0: no keepalive).
    pub keep_alive: u16,
    /// Set when the client has an id: its place among this node's client ids, and
    /// its persistent session (clean session off).
    pub named: Option<Named>,
    /// The CONNACK to send first.
    pub connack: Bytes,
    /// Bytes read behind the CONNECT.
    pub leftover: BytesMut,
}

pub async fn run<S>(io: S, state: Arc<AppState>, opened: Opened)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Opened {
        identity,
        registration,
        keep_alive,
        named,
        connack,
        leftover,
    } = opened;
    let span = debug_span!("mqtt", conn_id = %registration.conn().id, user = %identity.user);
    let burst = u64::from(state.config.client_frames_burst) * MILLI;
    let mut session = Session {
        io,
        rbuf: leftover,
        wbuf: BytesMut::new(),
        client: Client::new(state, identity, None, registration, Transport::Mqtt),
        // MQTT 3.1.1 §3.1.2.10: one and a half times the keep-alive.
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        last_heard: Instant::now(),
        refilled: Instant::now(),
        tokens: burst,
        inflight: Inflight::default(),
        user_qos: None,
        replay_due: false,
        named: named.map(Box::new),
        abandoned: false,
    };
    async move {
        telemetry::connection_opened(Transport::Mqtt.label());
        let reason = session.run(connack).await;
        debug!(reason = reason.label(), "mqtt session closed");
        Box::pin(session.finish(&reason)).await;
        telemetry::connection_closed(Transport::Mqtt.label(), reason.label());
    }
    .instrument(span)
    .await;
}

struct Session<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    client: Client,
    keep_alive: Option<Duration>,
    last_heard: Instant,
    /// When the token bucket was last refilled.
    refilled: Instant,
    /// Packets the client may still send at once, in thousandths (token bucket).
    tokens: u64,
    inflight: Inflight,
    /// The granted QoS of `kurir/user`, once subscribed.
    user_qos: Option<QoS>,
    /// A replay of the inbox is owed (a new `kurir/user` subscription, a resync).
    replay_due: bool,
    /// A client with an id; a persistent session keeps its subscriptions in it.
    named: Option<Box<Named>>,
    /// A write was given up: drop the connection without more.
    abandoned: bool,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self, connack: Bytes) -> CloseReason {
        let client = &self.client;
        // Presence before the inbox is read: see `crate::client`.
        // Everything but the live loop is boxed: its state then lives on the heap only
        // while it runs, not in every idle connection's task.
        if let Err(e) = Box::pin(client.register_presence()).await {
            warn!(conn_id = %client.conn().id, user = %client.identity.user, error = %e, "presence write failed");
            return CloseReason::Internal;
        }
        self.wbuf.extend_from_slice(&connack);
        if let Err(reason) = Box::pin(self.flush()).await {
            return reason;
        }
        Box::pin(self.restore()).await;
        self.live().await
    }

    /// The persistent session's subscriptions, again (a topic the token no longer
    /// allows is dropped).
    async fn restore(&mut self) {
        let Some(saved) = self
            .named
            .as_mut()
            .and_then(|n| n.saved.as_mut())
            .map(std::mem::take)
        else {
            return;
        };
        for name in saved.topics {
            match self.client.subscribe(&name).await {
                Ok(_) => self.kept(|s| s.topics.push(name)),
                Err(e) => debug!(code = e.code, "kept subscription not restored"),
            }
        }
        if let Some(q) = saved.user_qos {
            self.user_qos = Some(if q == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            });
            self.replay_due = true;
            self.kept(|s| s.user_qos = Some(q));
        }
    }

    /// Change what a persistent session keeps (nothing for a clean one).
    fn kept(&mut self, change: impl FnOnce(&mut Saved)) {
        if let Some(saved) = self.named.as_mut().and_then(|n| n.saved.as_mut()) {
            change(saved);
        }
    }

    async fn live(&mut self) -> CloseReason {
        let mailbox = self.client.conn().mailbox.clone();
        loop {
            if let Some(reason) = mailbox.take_close() {
                return reason;
            }
            if mailbox.take_resync() && self.user_qos.is_some() {
                self.replay_due = true;
            }
            if std::mem::take(&mut self.replay_due) {
                if let Err(reason) = Box::pin(self.replay()).await {
                    return reason;
                }
            }
            if mailbox.take_heartbeat() && self.client.identity.expired() {
                // A connection lives no longer than its token (checked once per heartbeat).
                return CloseReason::Policy(TOKEN_EXPIRED);
            }
            if let Err(reason) = Box::pin(self.handle_buffered()).await {
                return reason;
            }
            if self.replay_due {
                // A packet asked for it (a `kurir/user` subscription).
                continue;
            }
            if let Some(first) = mailbox.pop() {
                // With the window full, something to send waits for acks (at most the
                // stall timeout); a full window alone, with nothing queued, is no stall.
                if !self.inflight.has_room() {
                    if let Err(reason) = Box::pin(self.wait_room()).await {
                        return reason;
                    }
                }
                if let Err(reason) = Box::pin(self.write_batch(first)).await {
                    return reason;
                }
                continue;
            }
            // Wait for the mailbox, the client, or its keepalive to lapse.
            let keepalive = self.keep_alive.map(|k| self.last_heard + k);
            let read = {
                let mut lapse = pin!(async {
                    match keepalive {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                });
                let mut read = pin!(self.io.read_buf(&mut self.rbuf));
                poll_fn(|cx| {
                    if mailbox.poll_pending(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if let Poll::Ready(r) = read.as_mut().poll(cx) {
                        return Poll::Ready(Some(Ok(r)));
                    }
                    lapse
                        .as_mut()
                        .poll(cx)
                        .map(|()| Some(Err(CloseReason::Idle)))
                })
                .await
            };
            match read {
                None => {}
                Some(Err(reason)) => return reason,
                Some(Ok(Ok(n))) if n > 0 => self.last_heard = Instant::now(),
                Some(Ok(_)) => return CloseReason::Client,
            }
        }
    }

    /// Wait for PUBACKs until the in-flight window has room, at most the write stall
    /// timeout: a client that takes QoS 1 publishes and never acks them while more wait
    /// is one that does not read.
    async fn wait_room(&mut self) -> Result<(), CloseReason> {
        let deadline = Instant::now() + self.client.state.config.write_stall_timeout();
        let mailbox = self.client.conn().mailbox.clone();
        while !self.inflight.has_room() {
            if self.handle_one().await? {
                continue;
            }
            tokio::select! {
                r = self.io.read_buf(&mut self.rbuf) => match r {
                    Ok(n) if n > 0 => self.last_heard = Instant::now(),
                    _ => return Err(CloseReason::Client),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CloseReason::WriteStalled);
                }
                reason = mailbox.closing() => return Err(reason),
            }
            self.rbuf.reserve(512);
        }
        Ok(())
    }

    /// Handle every complete packet already read.
    async fn handle_buffered(&mut self) -> Result<(), CloseReason> {
        while self.handle_one().await? {}
        self.rbuf.reserve(512);
        Ok(())
    }

    /// Handle the next complete packet read, if there is one.
    async fn handle_one(&mut self) -> Result<bool, CloseReason> {
        let packet = match Packet::read(&mut self.rbuf, MAX_PACKET_BYTES) {
            Ok(p) => p,
            Err(CodecError::InsufficientBytes(_)) => return Ok(false),
            Err(CodecError::PayloadSizeLimitExceeded(_)) => return Err(CloseReason::FrameTooLarge),
            Err(e) => {
                debug!(error = %e, "malformed mqtt packet");
                return Err(CloseReason::Policy("malformed packet"));
            }
        };
        self.on_packet(packet).await?;
        Ok(true)
    }

    async fn on_packet(&mut self, packet: Packet) -> Result<(), CloseReason> {
        if let Packet::PubAck(ack) = packet {
            return self.on_puback(ack.pkid).await;
        }
        self.charge()?;
        match packet {
            Packet::PingReq => {
                let _ = PingResp.write(&mut self.wbuf);
                self.flush().await
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::Disconnect => Err(CloseReason::Client),
            Packet::Publish(_) => {
                telemetry::dropped("mqtt_publish");
                Err(CloseReason::Policy(NO_PUBLISH))
            }
            _ => Err(CloseReason::Policy("unexpected packet")),
        }
    }

    /// One packet off the token bucket, refilled at `KURIR_CLIENT_FRAMES_PER_SECOND`.
    fn charge(&mut self) -> Result<(), CloseReason> {
        let cfg = &self.client.state.config;
        let burst = u64::from(cfg.client_frames_burst) * MILLI;
        let rate = u64::from(cfg.client_frames_per_second);
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_millis() as u64 * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.refilled = now;
        if self.tokens < MILLI {
            return Err(CloseReason::RateLimited);
        }
        self.tokens -= MILLI;
        Ok(())
    }

    async fn on_puback(&mut self, pkid: u16) -> Result<(), CloseReason> {
        let Some(id) = self.inflight.remove(pkid) else {
            // Not one of ours: it costs like any packet.
            return self.charge();
        };
        self.client.ack_once(id);
        if let Err(e) = self.client.ack(&id.to_string()).await {
            // The entry stays in the inbox and is replayed on the next connection.
            debug!(%id, code = e.code, "ack not recorded");
        }
        Ok(())
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), CloseReason> {
        let mut codes = Vec::with_capacity(s.filters.len());
        for f in &s.filters {
            let code = match Filter::parse(&f.path) {
                Filter::User => {
                    let qos = if f.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    self.user_qos = Some(qos);
                    self.replay_due = true;
                    self.kept(|s| s.user_qos = Some(qos as u8));
                    SubscribeReasonCode::Success(qos)
                }
                Filter::Topic(name) => match self.client.subscribe(name).await {
                    Ok(topic) => {
                        self.kept(|s| {
                            if !s.topics.iter().any(|t| t == topic.as_str()) {
                                s.topics.push(topic.as_str().to_owned());
                            }
                        });
                        SubscribeReasonCode::Success(QoS::AtMostOnce)
                    }
                    Err(e) => {
                        debug!(code = e.code, "mqtt subscription refused");
                        SubscribeReasonCode::Failure
                    }
                },
                Filter::Refused => SubscribeReasonCode::Failure,
            };
            codes.push(code);
        }
        let _ = SubAck::new(s.pkid, codes).write(&mut self.wbuf);
        self.flush().await
    }

    async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), CloseReason> {
        for t in &u.topics {
            match Filter::parse(t) {
                Filter::User => {
                    self.user_qos = None;
                    self.kept(|s| s.user_qos = None);
                }
                Filter::Topic(name) => {
                    let _ = self.client.unsubscribe(name);
                    self.kept(|s| s.topics.retain(|t| t != name));
                }
                Filter::Refused => {}
            }
        }
        let _ = UnsubAck::new(u.pkid).write(&mut self.wbuf);
        self.flush().await
    }

    /// The user's unacked inbox, oldest first, on `kurir/user`.
    async fn replay(&mut self) -> Result<(), CloseReason> {
        let Some(qos) = self.user_qos else {
            return Ok(());
        };
        let mut replay = self.client.replay();
        loop {
            let page = self.client.next_page(&mut replay).await?;
            if page.is_empty() {
                return Ok(());
            }
            // `DELIVERED` once written: after each write of a run of publishes.
            let mut unwritten = Vec::with_capacity(page.len());
            for r in page {
                if qos == QoS::AtLeastOnce && !self.inflight.has_room() {
                    self.flush().await?;
                    unwritten.drain(..).for_each(|id| self.client.replayed(id));
                    self.wait_room().await?;
                }
                self.publish(topics::USER.to_owned(), qos, &r.frame, r.id);
                unwritten.push(r.id);
            }
            self.flush().await?;
            unwritten
                .into_iter()
                .for_each(|id| self.client.replayed(id));
        }
    }

    /// Encode a PUBLISH of a WebSocket-framed notification's JSON.
    fn publish(
        &mut self,
        topic: String,
        qos: QoS,
        frame: &Bytes,
        id: kurir_backends::NotificationId,
    ) {
        let json = kurir_wire::frame::payload_of(frame).len();
        let payload = frame.slice(frame.len() - json..);
        let mut p = Publish::from_bytes(topic, qos, payload);
        if qos == QoS::AtLeastOnce {
            p.pkid = self.inflight.insert(id);
        }
        let _ = p.write(&mut self.wbuf);
    }

    /// Where a queued notification goes: `None` when this connection is not subscribed
    /// to it.
    fn route(&self, out: &Queued) -> Option<(String, QoS)> {
        if out.direct {
            let qos = self.user_qos?;
            return Some((
                topics::USER.to_owned(),
                if out.stored { qos } else { QoS::AtMostOnce },
            ));
        }
        match topics::named_in(kurir_wire::frame::payload_of(&out.frame)) {
            Some(name) => Some((topics::of_topic(&name), QoS::AtMostOnce)),
            // A broadcast reaches every device subscribed to its user's notifications.
            None => self
                .user_qos
                .map(|_| (topics::USER.to_owned(), QoS::AtMostOnce)),
        }
    }

    /// `first` and whatever else is queued, up to [`WRITE_BATCH`] and the in-flight
    /// window, as one write.
    async fn write_batch(&mut self, first: Queued) -> Result<(), CloseReason> {
        let mut written: Vec<Queued> = Vec::with_capacity(8);
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            // Not admitted unless routed: a stored notification dropped before the
            // `kurir/user` subscription is still owed by its replay.
            if let Some((topic, qos)) = self.route(&out) {
                if self.client.admit(&out) {
                    self.publish(topic, qos, &out.frame, out.id);
                    written.push(out);
                }
            }
            n += 1;
            if n < WRITE_BATCH && self.inflight.has_room() {
                next = self.client.mailbox().pop();
            }
        }
        if written.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        self.client.delivered(written.iter());
        Ok(())
    }

    /// Write what is encoded. Fails when the write makes no progress for the write
    /// stall timeout, and gives way to a close request (the write then gets
    /// [`CLOSE_WAIT`] more).
    async fn flush(&mut self) -> Result<(), CloseReason> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let stall = self.client.state.config.write_stall_timeout();
        let mailbox = self.client.conn().mailbox.clone();
        let buf = std::mem::take(&mut self.wbuf);
        let io = &mut self.io;
        let write = pin!(async move {
            io.write_all(&buf).await?;
            // TLS: records leave only on flush.
            io.flush().await
        });
        let mut write = Stall::new(write, stall);
        let outcome = tokio::select! {
            biased;
            done = &mut write => Ok(done),
            reason = mailbox.closing() => Err(reason),
        };
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(_))) => Err(CloseReason::Client),
            Ok(Err(Stalled)) => {
                self.abandoned = true;
                Err(CloseReason::WriteStalled)
            }
            Err(reason) => {
                if !matches!(
                    tokio::time::timeout(CLOSE_WAIT, write).await,
                    Ok(Ok(Ok(())))
                ) {
                    self.abandoned = true;
                }
                Err(reason)
            }
        }
    }

    /// Close the socket (MQTT 3.1.1 has no server DISCONNECT), keep a persistent
    /// session's subscriptions, leave the topics and presence.
    async fn finish(&mut self, reason: &CloseReason) {
        if !self.abandoned && !matches!(reason, CloseReason::Client) {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.io.shutdown()).await;
        }
        if let Some(named) = self.named.take() {
            named.release();
        }
        self.client.leave(reason).await;
    }
}
