//! The MQTT sink: frames to `mqtt.topic_template` at QoS 1, headers as MQTT 5 properties,
//! delivery tracked by PUBACK in edgecam's own state.
//!
//! rumqttc keeps its session in memory and forgets unacknowledged QoS 1 publishes when the
//! broker does not resume the session, so this sink never relies on it: every frame stays in
//! `unacked` until its PUBACK arrives, and after every (re)connect everything unacknowledged
//! is published again (a frame whose PUBACK was lost may arrive twice; `edgecam.frame_id`
//! identifies it). Each connection gets a fresh rumqttc client and event loop, polled in a
//! task of its own that only forwards events; a no-traffic watchdog
//! (`mqtt.silence_timeout_secs`) drops a connection that went silent.
//!
//! Availability: the last will publishes a retained `offline` to
//! `<control_prefix>/<device>/status`; each connect publishes a retained `online`; a clean
//! shutdown publishes `offline` itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Destination, Outgoing, SinkReport};
use crate::config::{MqttConfig, MqttProtocol};
use crate::control::CommandOutcome;
use crate::control::Live;
use crate::metrics::{DropReason, Metrics};
use crate::mqtt::{self, ControlTopics};

mod delivery;

use delivery::PubackLedger;

/// One rumqttc client of either protocol version.
enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

impl Client {
    async fn publish(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Bytes,
        props: Option<PublishProperties>,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => match props {
                Some(p) => c
                    .publish_bytes_with_properties(topic, mqtt::qos(qos), retain, payload, p)
                    .await
                    .map_err(|e| e.to_string()),
                None => c
                    .publish_bytes(topic, mqtt::qos(qos), retain, payload)
                    .await
                    .map_err(|e| e.to_string()),
            },
            Client::V311(c) => {
                let q = match qos {
                    0 => rumqttc::QoS::AtMostOnce,
                    _ => rumqttc::QoS::AtLeastOnce,
                };
                c.publish_bytes(topic, q, retain, payload)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .subscribe(filter, mqtt::qos(1))
                .await
                .map_err(|e| e.to_string()),
            Client::V311(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn disconnect(&self) {
        match self {
            Client::V5(c) => {
                let _ = c.disconnect().await;
            }
            Client::V311(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}

/// What the event-loop task reports, the same for both protocol versions.
#[derive(Debug)]
enum Ev {
    /// CONNACK received.
    Connected,
    /// A PUBLISH went out with this packet id (0 for QoS 0).
    Sent(u16),
    /// PUBACK for this packet id.
    Acked(u16),
    /// A PUBLISH from the broker (a control command).
    Message { topic: String, payload: Bytes },
    /// Any other packet from the broker (keeps the watchdog quiet).
    Traffic,
    /// The connection failed; the task has stopped.
    Down(String),
}

fn spawn_v5(mut el: rumqttc::v5::EventLoop, tx: mpsc::UnboundedSender<Ev>) -> JoinHandle<()> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::Event;
    tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ev::Connected,
                Ok(Event::Incoming(Packet::PubAck(a))) => Ev::Acked(a.pkid),
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                },
                Ok(Event::Incoming(_)) => Ev::Traffic,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Ev::Sent(pkid),
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Down(e.to_string()));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    })
}

fn spawn_v311(mut el: rumqttc::EventLoop, tx: mpsc::UnboundedSender<Ev>) -> JoinHandle<()> {
    use rumqttc::{Event, Packet};
    tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ev::Connected,
                Ok(Event::Incoming(Packet::PubAck(a))) => Ev::Acked(a.pkid),
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Message {
                    topic: p.topic,
                    payload: p.payload,
                },
                Ok(Event::Incoming(_)) => Ev::Traffic,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Ev::Sent(pkid),
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Down(e.to_string()));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    })
}

/// Publishes frames to an MQTT broker. See the module docs.
pub struct MqttSink {
    cfg: MqttConfig,
    /// Client options without the last will, built once (TLS files are read then).
    options: Options,
    topic: String,
    status_topic: Option<String>,
    metrics: Arc<Metrics>,
    control: Option<(Arc<Live>, ControlTopics)>,
    acks: super::AckTx,
}

/// MQTT options of either protocol version.
enum Options {
    V5(Box<rumqttc::v5::MqttOptions>),
    V311(Box<rumqttc::MqttOptions>),
}

/// How often the retained state document is refreshed.
const STATE_INTERVAL: Duration = Duration::from_secs(5);

impl MqttSink {
    /// A sink for `device` publishing to `cfg.topic_template`; `max_message_bytes` (the
    /// byte budget) sizes the client's packet limit.
    pub fn new(
        cfg: &MqttConfig,
        device: &str,
        max_message_bytes: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::config::ConfigError> {
        let client_id = cfg.client_id_or(&format!("edgecam-{device}"));
        let options = match cfg.protocol {
            MqttProtocol::V5 => Options::V5(Box::new(mqtt::v5_options(
                cfg,
                &client_id,
                max_message_bytes,
            )?)),
            MqttProtocol::V311 => Options::V311(Box::new(mqtt::v311_options(
                cfg,
                &client_id,
                max_message_bytes,
            )?)),
        };
        Ok(MqttSink {
            options,
            topic: cfg.frame_topic(device),
            status_topic: cfg
                .control
                .then(|| mqtt::control_topics(cfg, device).status),
            cfg: cfg.clone(),
            metrics,
            control: None,
            acks: super::AckTx::default(),
        })
    }

    /// Reports every frame's fate to `acks` (see [`super::Sink`]).
    pub fn with_acks(mut self, acks: super::AckTx) -> Self {
        self.acks = acks;
        self
    }

    /// Also runs the control plane (when `mqtt.control` is on): subscribes to
    /// `<prefix>/<device>/set/+`, applies commands to `live` (see [`crate::control`]), and
    /// keeps the retained state document up to date.
    pub fn with_control(mut self, live: Arc<Live>) -> Self {
        if self.cfg.control {
            let device = live.config.borrow().device.id.clone();
            self.control = Some((live, mqtt::control_topics(&self.cfg, &device)));
        }
        self
    }

    /// Publishes the retained state document (QoS 1); `true` if it was queued.
    async fn publish_state(&self, client: &Client, last: Option<&CommandOutcome>) -> bool {
        let Some((live, topics)) = &self.control else {
            return false;
        };
        let doc = crate::control::state_json(live, &self.metrics, last);
        client
            .publish(&topics.state, 1, true, Bytes::from(doc), None)
            .await
            .is_ok()
    }

    /// The topic frames go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn connect(&self) -> (Client, mpsc::UnboundedReceiver<Ev>, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cap = self.cfg.max_in_flight.get() as usize + 8;
        match &self.options {
            Options::V5(o) => {
                let mut o = (**o).clone();
                if let Some(t) = &self.status_topic {
                    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                        t.clone(),
                        "offline",
                        mqtt::qos(1),
                        true,
                        None,
                    ));
                }
                let (c, el) = rumqttc::v5::AsyncClient::new(o, cap);
                (Client::V5(c), rx, spawn_v5(el, tx))
            }
            Options::V311(o) => {
                let mut o = (**o).clone();
                if let Some(t) = &self.status_topic {
                    o.set_last_will(rumqttc::LastWill::new(
                        t.clone(),
                        "offline",
                        rumqttc::QoS::AtLeastOnce,
                        true,
                    ));
                }
                let (c, el) = rumqttc::AsyncClient::new(o, cap);
                (Client::V311(c), rx, spawn_v311(el, tx))
            }
        }
    }

    async fn publish_frame(&self, client: &Client, out: &Outgoing) -> Result<(), String> {
        let props = (self.cfg.protocol == MqttProtocol::V5).then(|| {
            mqtt::headers_to_properties(
                out.record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_str())),
                self.cfg.message_expiry_secs.map(|s| s.get()),
            )
        });
        client
            .publish(
                &self.topic,
                self.cfg.qos.get(),
                false,
                out.record.value.clone(),
                props,
            )
            .await
    }

    fn delivered(&self, out: &Outgoing, report: &mut SinkReport) {
        *report.delivered.entry(self.topic.clone()).or_default() += 1;
        super::count_delivered(out, &self.metrics);
        self.acks.delivered(out, None);
    }

    /// Publishes everything received on `rx` until it closes and every frame is
    /// acknowledged, reconnecting as needed. Once `shutdown` is cancelled, waits at most
    /// `grace` for acknowledgements; frames still unacknowledged then are counted as
    /// `undelivered_at_shutdown`. Error-topic records have no MQTT destination and are
    /// counted as dropped.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> SinkReport {
        self.run_connection(Some(rx), shutdown, grace).await
    }

    /// The connection loop. With `rx` it carries frames (and the control plane, when set)
    /// and ends once `rx` closed and everything is acknowledged; without, it carries only
    /// the control plane and ends when `shutdown` is cancelled.
    async fn run_connection(
        self,
        mut rx: Option<mpsc::Receiver<Outgoing>>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> SinkReport {
        let carries_frames = rx.is_some();
        // Done: no frame can arrive or is waiting for its PUBACK, and (control plane only)
        // the agent is stopping.
        let done = |input_open: bool, ledger: &PubackLedger<Outgoing>| {
            !input_open && ledger.is_empty() && (carries_frames || shutdown.is_cancelled())
        };
        let mut report = SinkReport::default();
        let mut ledger: PubackLedger<Outgoing> = PubackLedger::default();
        let mut input_open = carries_frames;
        let mut give_up_at: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        let mut errors = mqtt::ErrorLog::default();
        let silence = Duration::from_secs(self.cfg.silence_timeout_secs as u64);
        let mut last_command: Option<CommandOutcome> = None;
        let mut state_tick = tokio::time::interval(STATE_INTERVAL);
        state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_in_flight = self.cfg.max_in_flight.get() as usize;
        'connection: loop {
            let (client, mut events, task) = self.connect();
            ledger.new_connection();
            let mut connected = false;
            let mut last_traffic = Instant::now();
            let clean_exit = loop {
                if give_up_at.is_none() && shutdown.is_cancelled() {
                    give_up_at = Some(Instant::now() + grace);
                }
                if done(input_open, &ledger) {
                    // Nothing left to deliver: say goodbye if we can (the last will covers
                    // the case where we cannot).
                    break connected;
                }
                let deadline = async {
                    match give_up_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => shutdown.cancelled().await,
                    }
                };
                let can_take = input_open && connected && ledger.len() < max_in_flight;
                tokio::select! {
                    biased;
                    ev = events.recv() => {
                        last_traffic = Instant::now();
                        match ev {
                            Some(Ev::Connected) => {
                                connected = true;
                                errors.reset();
                                backoff = Duration::from_millis(200);
                                tracing::info!(broker = %format!("{}:{}", self.cfg.host, self.cfg.port()), resend = ledger.len(), "MQTT connected");
                                if let Some(t) = &self.status_topic {
                                    if client.publish(t, 1, true, Bytes::from_static(b"online"), None).await.is_ok() {
                                        ledger.queued(None);
                                    }
                                }
                                if let Some((_, topics)) = &self.control {
                                    if let Err(e) = client.subscribe(&topics.set_filter).await {
                                        tracing::warn!(error = %e, "cannot subscribe to commands");
                                    }
                                    if self.publish_state(&client, last_command.as_ref()).await {
                                        ledger.queued(None);
                                    }
                                }
                                // Everything not acknowledged goes again, oldest first.
                                for id in ledger.undelivered() {
                                    let out = ledger.get(id).expect("undelivered");
                                    if self.publish_frame(&client, out).await.is_err() {
                                        break;
                                    }
                                    ledger.queued(Some(id));
                                }
                            }
                            Some(Ev::Sent(pkid)) => {
                                // QoS 0: delivered as far as MQTT will ever say.
                                if let Some(out) = ledger.on_sent(pkid) {
                                    self.delivered(&out, &mut report);
                                }
                            }
                            Some(Ev::Acked(pkid)) => {
                                if let Some(out) = ledger.on_acked(pkid) {
                                    self.delivered(&out, &mut report);
                                }
                            }
                            Some(Ev::Message { topic, payload }) => {
                                if let Some((live, topics)) = &self.control {
                                    if let Some(name) = topic.strip_prefix(&topics.set_prefix) {
                                        last_command = Some(crate::control::handle(name, &payload, live));
                                        if self.publish_state(&client, last_command.as_ref()).await {
                                            ledger.queued(None);
                                        }
                                    }
                                }
                            }
                            Some(Ev::Traffic) => {}
                            Some(Ev::Down(e)) => {
                                let what = if connected { "MQTT connection lost; reconnecting" } else { "MQTT connection failed; retrying" };
                                errors.log(what, &e, backoff);
                                self.metrics.set_last_error(format!("MQTT: {e}"));
                                break false;
                            }
                            None => break false,
                        }
                    }
                    msg = recv(&mut rx), if can_take => match msg {
                        Some(out) if out.destination == Destination::Errors => {
                            self.metrics.drop_frame(DropReason::DeliveryRejected);
                            self.acks.rejected(&out, "the MQTT sink has no error topic");
                        }
                        Some(out) => {
                            let sent = self.publish_frame(&client, &out).await;
                            let id = ledger.accept(out);
                            if sent.is_err() {
                                break false;
                            }
                            ledger.queued(Some(id));
                        }
                        None => input_open = false,
                    },
                    _ = state_tick.tick(), if connected && self.control.is_some() => {
                        if self.publish_state(&client, last_command.as_ref()).await {
                            ledger.queued(None);
                        }
                    }
                    _ = tokio::time::sleep_until(last_traffic + silence) => {
                        tracing::warn!(silent_secs = silence.as_secs(), "MQTT connection silent; reconnecting");
                        self.metrics.set_last_error("MQTT connection went silent".to_string());
                        break false;
                    }
                    _ = deadline => {
                        if give_up_at.is_some_and(|t| Instant::now() >= t) {
                            break false;
                        }
                    }
                }
            };
            if clean_exit {
                // The retained state shows the final counts, then the status says offline.
                if self.control.is_some() {
                    self.publish_state(&client, last_command.as_ref()).await;
                }
                if let Some(t) = &self.status_topic {
                    let _ = client
                        .publish(t, 1, true, Bytes::from_static(b"offline"), None)
                        .await;
                    // Give the event loop a moment to send it before DISCONNECT.
                    let until = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < until {
                        match tokio::time::timeout_at(until, events.recv()).await {
                            Ok(Some(Ev::Acked(_))) | Ok(None) | Err(_) => break,
                            Ok(Some(_)) => {}
                        }
                    }
                }
                client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
                break 'connection;
            }
            task.abort();
            self.metrics
                .mqtt_reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if give_up_at.is_some_and(|t| Instant::now() >= t) || done(input_open, &ledger) {
                break 'connection;
            }
            // Back off before reconnecting, but keep an eye on the shutdown deadline.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            tokio::select! {
                _ = &mut wait => {}
                _ = shutdown.cancelled(), if give_up_at.is_none() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        if let Some(rx) = rx.as_mut() {
            report.undelivered =
                super::count_undelivered(ledger.len(), rx, input_open, &*self.metrics, &self.acks);
        }
        report
    }
}

/// The next record on `rx`; never, without one (a control-plane-only connection).
async fn recv(rx: &mut Option<mpsc::Receiver<Outgoing>>) -> Option<Outgoing> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The MQTT control plane alone, for an agent whose frames go to another sink: status with
/// its last will, the retained state document, commands under `<prefix>/<device>/set/+`
/// (see [`crate::control`]), on a connection of its own that carries no frames. An MQTT
/// sink carries the same control plane on its own connection instead.
pub struct MqttControlPlane(MqttSink);

impl MqttControlPlane {
    /// The control plane of the agent of `live` through the broker of `cfg` (`[mqtt]` beside
    /// another sink); `None` when `mqtt.control` is off.
    ///
    /// Errors: a `[mqtt.tls]` file that cannot be read any more.
    pub fn new(
        cfg: &MqttConfig,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, crate::config::ConfigError> {
        if !cfg.control {
            return Ok(None);
        }
        let (device, budget) = {
            let running = live.config.borrow();
            (
                running.device.id.clone(),
                running.encode.max_message_bytes.get(),
            )
        };
        let sink = MqttSink::new(cfg, &device, budget, metrics)?;
        Ok(Some(MqttControlPlane(sink.with_control(live))))
    }

    /// Serves commands and keeps status and state up to date, reconnecting as needed, until
    /// `shutdown` is cancelled; then publishes the final state and a retained `offline`
    /// (waiting at most `grace`) and disconnects.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        self.0.run_connection(None, shutdown, grace).await;
    }
}

impl super::Sink for MqttSink {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn window(&self) -> usize {
        self.cfg.max_in_flight.get() as usize
    }

    fn run(
        self: Box<Self>,
        rx: mpsc::Receiver<Outgoing>,
        acks: super::AckTx,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> futures::future::BoxFuture<'static, SinkReport> {
        Box::pin((*self).with_acks(acks).run(rx, shutdown, grace))
    }
}
