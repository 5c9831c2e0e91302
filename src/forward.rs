//! The forwarder: between the encoder and the sink, it decides what goes to the sink now,
//! what goes to the spool, and what the spool may forget.
//!
//! [`Forwarder`] is a pure state machine: it takes records ([`Forwarder::accept`]), the
//! sink's per-record [`Ack`]s ([`Forwarder::on_ack`]) and the time ([`Forwarder::tick`]),
//! and hands out what to send ([`Forwarder::next_send`]). It does its spool I/O itself but
//! never waits; [`run`] is the thin async shell around it, on a thread of its own so that
//! `fdatasync` never stalls the sink's runtime.
//!
//! Per `spool.mode`:
//! - `outage`: a record goes to the sink while its in-flight window has room, else to the
//!   spool; a record the sink has held for `spill_after_ms` without a delivery report is
//!   written to the spool too (it stays with the sink). With a healthy broker nothing is
//!   written.
//! - `always`: every record is appended and committed before the sink gets it.
//! - `off`: no spool; the forwarder only passes records through, applying backpressure.
//!
//! Live first: records from the encoder always go before the backlog; while live records
//! flow, the backlog may use `replay_share_percent` of the window, otherwise all of it.
//! A record is forgotten by the spool only after its delivery report. At shutdown every
//! record not yet delivered is written to the spool ([`Forwarder::finish`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SpoolConfig, SpoolMode};
use crate::metrics::{DropReason, Metrics};
use crate::sink::{Ack, Outgoing};
use crate::spool::{DirStorage, Spool, SpoolError, Storage};

/// Records kept in memory when the spool cannot write (a full disk), at most.
pub const MEMORY_RECORDS: usize = 256;

/// How long after the last live record the backlog is still limited to its share.
const LIVE_RECENT: Duration = Duration::from_secs(1);

/// How the forwarder behaves, from `[spool]` and the sink.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    /// `spool.mode`.
    pub mode: SpoolMode,
    /// The sink's in-flight window ([`crate::sink::Sink::window`]), records, ≥ 1.
    pub window: usize,
    /// Of the window, what the backlog may use while live records flow, records, ≥ 1.
    pub replay_window: usize,
    /// `spool.spill_after_ms`.
    pub spill_after: Duration,
    /// `spool.commit_interval_ms`.
    pub commit_interval: Duration,
    /// The source can wait (a file replay): hold the encoder back while the window is full
    /// instead of spooling (`outage` mode; `always` spools anyway).
    pub backpressure: bool,
}

impl ForwardOptions {
    /// From `[spool]`, a sink window of `window` records and whether the source can wait.
    pub fn new(cfg: &SpoolConfig, window: usize, backpressure: bool) -> Self {
        let window = window.max(1);
        ForwardOptions {
            mode: cfg.mode,
            window,
            replay_window: (window * cfg.replay_share_percent.get() as usize / 100).max(1),
            spill_after: Duration::from_millis(cfg.spill_after_ms.get()),
            commit_interval: Duration::from_millis(cfg.commit_interval_ms.get()),
            backpressure,
        }
    }
}

/// A record with the sink.
#[derive(Debug)]
struct Held {
    out: Outgoing,
    sent_at: Instant,
    /// Its spool id, once it is in the spool.
    spool_id: Option<u64>,
    /// From the backlog or the memory overflow, not live.
    replay: bool,
    /// Its spool copy was dropped to make room: not spilled again (it is among the oldest),
    /// only spooled again at shutdown if still undelivered.
    evicted: bool,
}

/// The delivery state machine (see the module documentation).
pub struct Forwarder<S: Storage = DirStorage> {
    opts: ForwardOptions,
    spool: Option<Spool<S>>,
    metrics: Arc<Metrics>,
    next_ticket: u64,
    /// With the sink, by ticket.
    held: BTreeMap<u64, Held>,
    /// Live records to hand to the sink, oldest first, with their spool id (`always`).
    ready: VecDeque<(Outgoing, Option<u64>)>,
    /// `always`: appended, handed to the sink once committed.
    awaiting_commit: Vec<(Outgoing, u64)>,
    /// Appended to the spool, not committed, held nowhere else: kept to hand back when
    /// the commit fails. By spool id.
    uncommitted: BTreeMap<u64, Outgoing>,
    /// What the spool could not take, oldest first, at most [`MEMORY_RECORDS`].
    memory: VecDeque<Outgoing>,
    last_live: Option<Instant>,
    last_expire: Option<Instant>,
    last_retry: Option<Instant>,
    last_commit: Option<Instant>,
    /// A write failure was logged; the next success is logged too.
    failing: bool,
}

impl<S: Storage> Forwarder<S> {
    /// A forwarder over `spool` (`None` for `mode = "off"`).
    pub fn new(opts: ForwardOptions, spool: Option<Spool<S>>, metrics: Arc<Metrics>) -> Self {
        let f = Forwarder {
            opts,
            spool,
            metrics,
            next_ticket: 1,
            held: BTreeMap::new(),
            ready: VecDeque::new(),
            awaiting_commit: Vec::new(),
            uncommitted: BTreeMap::new(),
            memory: VecDeque::new(),
            last_live: None,
            last_expire: None,
            last_retry: None,
            last_commit: None,
            failing: false,
        };
        f.gauges();
        f
    }

    fn spooling(&self) -> bool {
        self.spool.is_some() && self.opts.mode != SpoolMode::Off
    }

    /// Records on their way to the sink or with it.
    fn in_window(&self) -> usize {
        self.held.len() + self.ready.len() + self.awaiting_commit.len()
    }

    /// `true` when the forwarder takes a record from the encoder now. `false` (hold the
    /// encoder back) only without a spool, or for a source that can wait, while the window
    /// is full.
    pub fn can_accept(&self) -> bool {
        let must_wait =
            !self.spooling() || (self.opts.backpressure && self.opts.mode == SpoolMode::Outage);
        !must_wait || self.in_window() < self.opts.window
    }

    /// Takes a live record from the encoder.
    pub fn accept(&mut self, mut out: Outgoing, now: Instant) {
        out.ticket = self.next_ticket;
        self.next_ticket += 1;
        self.last_live = Some(now);
        let room = self.in_window() < self.opts.window;
        match (self.spooling(), self.opts.mode) {
            (true, SpoolMode::Always) if room => match self.append(&out, true) {
                Ok(id) => self.awaiting_commit.push((out, id)),
                // Not durable, but not lost either while it stays in memory.
                Err(out) => self.ready.push_back((out, None)),
            },
            (true, _) if !room => {
                if let Err(out) = self.spool_detached(out) {
                    self.keep_in_memory(out);
                }
            }
            _ => self.ready.push_back((out, None)),
        }
    }

    /// Appends `out` as backlog (the sink does not hold it) and keeps a copy until the next
    /// commit, to keep in memory should that commit fail; `out` comes back on failure.
    fn spool_detached(&mut self, out: Outgoing) -> Result<(), Outgoing> {
        let id = self.append(&out, false)?;
        self.uncommitted.insert(id, out);
        Ok(())
    }

    /// Appends to the spool; the record comes back on failure (logged, counted).
    fn append(&mut self, out: &Outgoing, with_sink: bool) -> Result<u64, Outgoing> {
        let spool = self.spool.as_mut().expect("spooling");
        let appended = spool.append(out, with_sink);
        for id in spool.take_evicted() {
            if let Some(h) = self.held.values_mut().find(|h| h.spool_id == Some(id)) {
                h.spool_id = None;
                h.evicted = true;
            } else if let Some(r) = self.ready.iter_mut().find(|r| r.1 == Some(id)) {
                r.1 = None;
            }
        }
        match appended {
            Ok(id) => {
                self.metrics.spooled.fetch_add(1, Relaxed);
                if self.failing {
                    tracing::info!("spool writes work again");
                    self.failing = false;
                }
                Ok(id)
            }
            Err(SpoolError::Commit { error, returned }) => {
                self.write_failed(&error);
                self.commit_failed(returned);
                Err(out.clone())
            }
            Err(e) => {
                self.write_failed(&e);
                Err(out.clone())
            }
        }
    }

    fn write_failed(&mut self, e: &dyn std::fmt::Display) {
        self.metrics.spool_errors.fetch_add(1, Relaxed);
        if !self.failing {
            tracing::error!(error = %e, "spool write failed; keeping frames in memory (up to {MEMORY_RECORDS})");
            self.metrics.set_last_error(format!("spool: {e}"));
            self.failing = true;
        }
    }

    /// Keeps `out` in memory, dropping the oldest kept record when full (counted).
    fn keep_in_memory(&mut self, out: Outgoing) {
        if self.memory.len() >= MEMORY_RECORDS {
            self.memory.pop_front();
            self.metrics.drop_frame(DropReason::SpoolWriteFailed);
        }
        self.memory.push_back(out);
    }

    /// A failed commit forgot the records `ids`: whoever holds them keeps them in memory.
    fn commit_failed(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(out) = self.uncommitted.remove(&id) {
                self.keep_in_memory(out);
            } else if let Some(i) = self.awaiting_commit.iter().position(|a| a.1 == id) {
                let (out, _) = self.awaiting_commit.remove(i);
                self.ready.push_back((out, None));
            } else if let Some(h) = self.held.values_mut().find(|h| h.spool_id == Some(id)) {
                h.spool_id = None;
            }
        }
    }

    /// The sink's report on one record: a delivered or rejected record is forgotten, in
    /// the spool too.
    pub fn on_ack(&mut self, ack: Ack) {
        let ticket = ack.ticket();
        let Some(h) = self.held.remove(&ticket) else {
            return;
        };
        if let (Some(id), Some(spool)) = (h.spool_id, self.spool.as_mut()) {
            if let Err(e) = spool.ack(id) {
                tracing::warn!(error = %e, "cannot unlink a delivered spool segment");
            }
        }
    }

    /// Time passes: spills records the sink has held too long, group-commits, expires old
    /// frames, retries what waits in memory, and updates the gauges.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) {
        if !self.spooling() {
            self.gauges();
            return;
        }
        if self.opts.mode == SpoolMode::Outage {
            let overdue: Vec<u64> = self
                .held
                .iter()
                .filter(|(_, h)| {
                    h.spool_id.is_none() && now.duration_since(h.sent_at) >= self.opts.spill_after
                })
                .map(|(t, _)| *t)
                .collect();
            for t in overdue {
                let out = self.held[&t].out.clone();
                if let Ok(id) = self.append(&out, true) {
                    self.held.get_mut(&t).expect("listed above").spool_id = Some(id);
                }
            }
        }
        let spool = self.spool.as_mut().expect("spooling");
        let due = self
            .last_commit
            .is_none_or(|t| now.duration_since(t) >= self.opts.commit_interval);
        if spool.uncommitted() > 0 && due {
            self.last_commit = Some(now);
            self.commit();
        }
        // What waits in memory goes back to the spool once it can write again (while
        // writes fail, one try a second).
        let retry = !self.failing
            || self
                .last_retry
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if retry && !self.memory.is_empty() {
            self.last_retry = Some(now);
            while let Some(out) = self.memory.pop_front() {
                if let Err(out) = self.spool_detached(out) {
                    self.memory.push_front(out);
                    break;
                }
            }
        }
        if self
            .last_expire
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_expire = Some(now);
            let spool = self.spool.as_mut().expect("spooling");
            if let Err(e) = spool.expire(wall) {
                tracing::warn!(error = %e, "cannot unlink an expired spool segment");
            }
        }
        self.count_drops();
        self.gauges();
    }

    /// Commits now; on failure the forgotten records stay in memory.
    fn commit(&mut self) {
        let spool = self.spool.as_mut().expect("spooling");
        match spool.commit() {
            Ok(()) => {
                self.uncommitted.clear();
                for (out, id) in self.awaiting_commit.drain(..) {
                    self.ready.push_back((out, Some(id)));
                }
            }
            Err((e, ids)) => {
                self.write_failed(&e);
                self.commit_failed(ids);
            }
        }
    }

    fn count_drops(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let d = spool.take_dropped();
        self.metrics.drop_frames(DropReason::SpoolFull, d.full);
        self.metrics
            .drop_frames(DropReason::SpoolExpired, d.expired);
        self.metrics
            .drop_frames(DropReason::SpoolCorrupt, d.corrupt);
        if d.full > 0 {
            tracing::warn!(dropped = d.full, "spool full: dropped its oldest frames");
        }
    }

    fn gauges(&self) {
        self.metrics.unacked.store(
            (self.in_window() + self.memory.len() + self.uncommitted.len()) as u64,
            Relaxed,
        );
        if let Some(s) = &self.spool {
            let st = s.stats();
            self.metrics.spool_records.store(st.records, Relaxed);
            self.metrics.spool_bytes.store(st.bytes, Relaxed);
        }
    }

    /// The next record to hand to the sink, if the window has room: live records first,
    /// then what waits in memory, then the spool's backlog (oldest first; limited to its
    /// share of the window while live records flow). `draining`: no new backlog is
    /// started (shutdown).
    pub fn next_send(
        &mut self,
        now: Instant,
        wall: SystemTime,
        draining: bool,
    ) -> Option<Outgoing> {
        if self.held.len() >= self.opts.window {
            return None;
        }
        if let Some((out, spool_id)) = self.ready.pop_front() {
            return Some(self.hold(out, now, spool_id, false));
        }
        if draining {
            return None;
        }
        let replaying = self.held.values().filter(|h| h.replay).count();
        let live_recent = self
            .last_live
            .is_some_and(|t| now.duration_since(t) < LIVE_RECENT);
        let limit = if live_recent {
            self.opts.replay_window
        } else {
            self.opts.window
        };
        if replaying >= limit {
            return None;
        }
        if let Some(mut out) = self.memory.pop_front() {
            out.ticket = self.next_ticket;
            self.next_ticket += 1;
            return Some(self.hold(out, now, None, true));
        }
        let spool = self.spool.as_mut()?;
        match spool.next_backlog(wall) {
            Ok(Some((id, mut out))) => {
                out.ticket = self.next_ticket;
                self.next_ticket += 1;
                self.metrics.replayed.fetch_add(1, Relaxed);
                Some(self.hold(out, now, Some(id), true))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spool; retrying");
                None
            }
        }
    }

    fn hold(
        &mut self,
        out: Outgoing,
        now: Instant,
        spool_id: Option<u64>,
        replay: bool,
    ) -> Outgoing {
        let copy = out.clone();
        self.held.insert(
            out.ticket,
            Held {
                out,
                sent_at: now,
                spool_id,
                replay,
                evicted: false,
            },
        );
        copy
    }

    /// `true` while anything is undelivered: with the sink, waiting for it, in memory, or
    /// in the spool's backlog.
    pub fn pending(&self) -> bool {
        self.in_window() > 0
            || !self.memory.is_empty()
            || !self.uncommitted.is_empty()
            || self.spool.as_ref().is_some_and(|s| s.stats().backlog > 0)
    }

    /// `true` while live records wait to be handed to the sink (or for their commit).
    pub fn live_waiting(&self) -> bool {
        !self.ready.is_empty() || !self.awaiting_commit.is_empty()
    }

    /// The sink has stopped: everything not delivered goes to the spool, which is committed
    /// and closed. Returns the records that could be kept nowhere (counted as
    /// `undelivered_at_shutdown`).
    pub fn finish(mut self) -> u64 {
        let mut lost = 0u64;
        let mut left: Vec<Outgoing> = Vec::new();
        for (_, h) in std::mem::take(&mut self.held) {
            if h.spool_id.is_none() {
                left.push(h.out);
            }
        }
        left.extend(
            self.ready
                .drain(..)
                .filter(|(_, id)| id.is_none())
                .map(|(o, _)| o),
        );
        left.extend(self.memory.drain(..));
        if self.spooling() {
            for out in left {
                if self.spool_detached(out).is_err() {
                    lost += 1;
                }
            }
            let spool = self.spool.as_mut().expect("spooling");
            match spool.close() {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "spool: final commit failed");
                    lost += self.uncommitted.len() as u64;
                }
            }
        } else {
            lost += left.len() as u64;
        }
        self.count_drops();
        self.gauges();
        if lost > 0 {
            tracing::error!(undelivered = lost, "records left undelivered at shutdown");
            self.metrics
                .drop_frames(DropReason::UndeliveredAtShutdown, lost);
        }
        if let Some(s) = &self.spool {
            let st = s.stats();
            if st.records > 0 {
                tracing::info!(
                    records = st.records,
                    bytes = st.bytes,
                    "spool keeps undelivered frames for the next start"
                );
            }
        }
        lost
    }
}

/// How often [`run`] ticks.
fn tick_period(opts: &ForwardOptions) -> Duration {
    (opts.commit_interval.min(opts.spill_after) / 2)
        .clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// Runs `fwd` until the sink has stopped: records from `input` (the encoder), acks from
/// `acks` (the sink), records out on `to_sink` (capacity at least the window). When
/// `input` ends, everything left (the backlog included) is still sent and `to_sink` closed
/// once nothing is pending; once `shutdown` is cancelled, no more backlog is sent, and
/// `to_sink` is closed when the encoder's last records are with the sink (the sink then
/// has its grace period). Returns what [`Forwarder::finish`] returns.
pub async fn run<S: Storage>(
    mut fwd: Forwarder<S>,
    mut input: mpsc::Receiver<Outgoing>,
    to_sink: mpsc::Sender<Outgoing>,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    shutdown: CancellationToken,
) -> u64 {
    let mut to_sink = Some(to_sink);
    let mut input_open = true;
    let mut tick = tokio::time::interval(tick_period(&fwd.opts));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = shutdown.is_cancelled();
        if let Some(tx) = &to_sink {
            while let Some(out) = fwd.next_send(Instant::now(), SystemTime::now(), stopping) {
                if let Err(e) = tx.try_send(out) {
                    // The sink is gone or (a bug) its channel is full: the record stays
                    // held and is spooled by `finish`.
                    tracing::debug!(error = %e, "sink channel refused a record");
                    break;
                }
            }
            // Input over: after a natural end, once everything (the backlog too) is
            // delivered; at shutdown, once the live records are with the sink.
            let done = !input_open
                && if stopping {
                    !fwd.live_waiting()
                } else {
                    !fwd.pending()
                };
            if done {
                to_sink = None;
            }
        }
        tokio::select! {
            biased;
            ack = acks.recv() => match ack {
                Some(a) => fwd.on_ack(a),
                None => break,
            },
            msg = input.recv(), if input_open && fwd.can_accept() => match msg {
                Some(out) => fwd.accept(out, Instant::now()),
                None => input_open = false,
            },
            _ = tick.tick() => fwd.tick(Instant::now(), SystemTime::now()),
            _ = shutdown.cancelled(), if !stopping => {}
        }
    }
    // The sink has stopped. What the encoder still has (the frames left in the queue, once
    // the pipeline closes it) is kept as well: it ends when the encoder does.
    if input_open {
        while let Some(out) = input.recv().await {
            fwd.accept(out, Instant::now());
        }
    }
    fwd.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::record::header;
    use crate::spool::format::tests::sample;
    use crate::spool::{MemStorage, SpoolOptions};

    fn opts(mode: SpoolMode, window: usize) -> ForwardOptions {
        ForwardOptions {
            mode,
            window,
            replay_window: (window / 2).max(1),
            spill_after: Duration::from_millis(2000),
            commit_interval: Duration::from_millis(200),
            backpressure: false,
        }
    }

    fn forwarder(mode: SpoolMode, window: usize, mem: &MemStorage) -> Forwarder<MemStorage> {
        let (spool, _) = Spool::open(mem.clone(), SpoolOptions::new(64 << 20, None)).unwrap();
        Forwarder::new(
            opts(mode, window),
            Some(spool),
            Arc::new(Metrics::default()),
        )
    }

    fn seq(out: &Outgoing) -> u64 {
        out.record.header(header::SEQ).unwrap().parse().unwrap()
    }

    /// Everything `next_send` hands out now.
    fn take_all(f: &mut Forwarder<MemStorage>, now: Instant) -> Vec<Outgoing> {
        let mut v = Vec::new();
        while let Some(o) = f.next_send(now, SystemTime::now(), false) {
            v.push(o);
        }
        v
    }

    #[test]
    fn a_healthy_sink_means_no_spool_writes_in_outage_mode() {
        let mem = MemStorage::new();
        let mut f = forwarder(SpoolMode::Outage, 4, &mem);
        let t0 = Instant::now();
        let mut delivered = Vec::new();
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            f.accept(sample(i, 500), now);
            for o in take_all(&mut f, now) {
                delivered.push(seq(&o));
                f.on_ack(Ack::Delivered(o.ticket, None));
            }
            f.tick(now, SystemTime::now());
        }
        assert_eq!(delivered, (0..100).collect::<Vec<_>>());
        assert_eq!(mem.written(), 0);
        assert_eq!(f.metrics.spooled.load(Relaxed), 0);
        assert!(!f.pending());
    }

    /// The sink stalls for a while (no delivery reports), then recovers: every record is
    /// delivered; once it is back, live records go out before the backlog; the backlog
    /// drains oldest first; the spool ends empty.
    #[test]
    fn an_outage_spools_then_live_goes_first_and_the_backlog_drains() {
        let mem = MemStorage::new();
        let mut f = forwarder(SpoolMode::Outage, 4, &mem);
        let t0 = Instant::now();
        let mut with_sink: Vec<Outgoing> = Vec::new();
        // 60 records at 10/s, nothing acknowledged.
        for i in 0..60u64 {
            let now = t0 + Duration::from_millis(100 * i);
            f.accept(sample(i, 500), now);
            with_sink.extend(take_all(&mut f, now));
            f.tick(now, SystemTime::now());
        }
        assert_eq!(with_sink.len(), 4, "the window bounds what the sink holds");
        let spooled = f.metrics.spooled.load(Relaxed);
        assert_eq!(
            spooled, 60,
            "56 over the window + 4 spilled after spill_after"
        );
        // The broker is back: the sink delivers what it held.
        let mut now = t0 + Duration::from_secs(6);
        let mut got: Vec<(u64, bool)> = Vec::new();
        for o in with_sink.drain(..) {
            got.push((seq(&o), false));
            f.on_ack(Ack::Delivered(o.ticket, None));
        }
        // Live records keep coming while the backlog drains.
        let mut live = 60u64;
        for _ in 0..200 {
            now += Duration::from_millis(100);
            f.accept(sample(live, 500), now);
            live += 1;
            f.tick(now, SystemTime::now());
            let sent = take_all(&mut f, now);
            // The live record just accepted is the first thing sent.
            assert_eq!(seq(&sent[0]), live - 1);
            for o in sent {
                got.push((seq(&o), o.record.header(header::REPLAYED).is_some()));
                f.on_ack(Ack::Delivered(o.ticket, None));
            }
            if !f.pending() {
                break;
            }
        }
        let all: BTreeSet<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            all,
            (0..live).collect::<BTreeSet<_>>(),
            "every record arrives"
        );
        let replayed: Vec<u64> = got.iter().filter(|g| g.1).map(|g| g.0).collect();
        assert!(
            replayed.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {replayed:?}"
        );
        assert_eq!(replayed.first(), Some(&4));
        f.tick(now + Duration::from_secs(1), SystemTime::now());
        assert_eq!(f.metrics.spool_records.load(Relaxed), 0);
        let fin = f.finish();
        assert_eq!(fin, 0);
    }

    #[test]
    fn always_mode_sends_only_what_was_committed() {
        let mem = MemStorage::new();
        let mut f = forwarder(SpoolMode::Always, 8, &mem);
        let t0 = Instant::now();
        f.accept(sample(0, 100), t0);
        f.accept(sample(1, 100), t0);
        assert!(take_all(&mut f, t0).is_empty(), "not durable yet");
        let t1 = t0 + Duration::from_millis(250);
        f.tick(t1, SystemTime::now());
        let sent = take_all(&mut f, t1);
        assert_eq!(sent.iter().map(seq).collect::<Vec<_>>(), [0, 1]);
        // A crash now (no finish) loses nothing: both are in the spool.
        drop(f);
        mem.power_loss(|_, _| 0);
        let (mut s, rec) = Spool::open(mem, SpoolOptions::new(64 << 20, None)).unwrap();
        assert_eq!(rec.records, 2);
        let (_, out) = s.next_backlog(SystemTime::now()).unwrap().unwrap();
        assert_eq!(seq(&out), 0);
    }

    #[test]
    fn finish_spools_everything_undelivered() {
        let mem = MemStorage::new();
        let mut f = forwarder(SpoolMode::Outage, 3, &mem);
        let t0 = Instant::now();
        for i in 0..5 {
            f.accept(sample(i, 100), t0);
        }
        let sent = take_all(&mut f, t0);
        assert_eq!(sent.len(), 3);
        f.on_ack(Ack::Delivered(sent[1].ticket, None));
        assert_eq!(f.finish(), 0);
        let (mut s, rec) = Spool::open(mem, SpoolOptions::new(64 << 20, None)).unwrap();
        assert_eq!(rec.records, 4);
        let mut seqs = Vec::new();
        while let Some((_, o)) = s.next_backlog(SystemTime::now()).unwrap() {
            seqs.push(seq(&o));
        }
        seqs.sort();
        assert_eq!(seqs, [0, 2, 3, 4]);
    }

    #[test]
    fn a_full_disk_keeps_records_in_memory_and_spooling_resumes() {
        let mem = MemStorage::new();
        let mut f = forwarder(SpoolMode::Outage, 2, &mem);
        let t0 = Instant::now();
        mem.set_full(true);
        let n = MEMORY_RECORDS as u64 + 10;
        for i in 0..n {
            f.accept(sample(i, 100), t0);
        }
        assert_eq!(take_all(&mut f, t0).len(), 2);
        let dropped = f.metrics.dropped();
        assert_eq!(dropped.get(&DropReason::SpoolWriteFailed), Some(&8));
        assert!(f.metrics.spool_errors.load(Relaxed) > 0);
        mem.set_full(false);
        let t1 = t0 + Duration::from_secs(2);
        f.tick(t1, SystemTime::now());
        f.tick(t1 + Duration::from_millis(300), SystemTime::now());
        assert!(f.memory.is_empty());
        // The memory's records, and the two the sink has held past spill_after.
        assert_eq!(
            f.metrics.spool_records.load(Relaxed),
            MEMORY_RECORDS as u64 + 2
        );
    }

    #[test]
    fn without_a_spool_the_window_holds_the_encoder_back() {
        let mut f: Forwarder<MemStorage> =
            Forwarder::new(opts(SpoolMode::Off, 2), None, Arc::new(Metrics::default()));
        let t0 = Instant::now();
        f.accept(sample(0, 10), t0);
        f.accept(sample(1, 10), t0);
        assert!(!f.can_accept());
        let sent = take_all(&mut f, t0);
        assert_eq!(sent.len(), 2);
        assert!(!f.can_accept());
        f.on_ack(Ack::Delivered(sent[0].ticket, None));
        assert!(f.can_accept());
        f.accept(sample(2, 10), t0);
        assert_eq!(f.finish(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A live record from the encoder.
        Accept,
        /// The sink delivers the i-th record it holds (modulo how many).
        Deliver(usize),
        /// The sink refuses the i-th record for good.
        Reject(usize),
        /// Time passes, milliseconds.
        Wait(u64),
        /// Clean stop and start: finish, reopen the spool, a new forwarder.
        Restart,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Accept),
            3 => any::<usize>().prop_map(Op::Deliver),
            1 => any::<usize>().prop_map(Op::Reject),
            2 => (1u64..3000).prop_map(Op::Wait),
            1 => Just(Op::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]
        /// Against a model, in `outage` and `always` mode: whatever the sink does and
        /// whenever the agent restarts cleanly, the sink never holds more than its window,
        /// and once the sink delivers everything, every accepted record has been delivered
        /// or rejected (never lost), and the spool ends empty.
        #[test]
        fn no_accepted_record_is_lost(
            always in proptest::bool::ANY,
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let mode = if always { SpoolMode::Always } else { SpoolMode::Outage };
            let mem = MemStorage::new();
            let mut f = forwarder(mode, 4, &mem);
            let mut now = Instant::now();
            let mut sink: Vec<Outgoing> = Vec::new();
            let mut next = 0u64;
            let mut done: BTreeSet<u64> = BTreeSet::new();
            let pump = |f: &mut Forwarder<MemStorage>, sink: &mut Vec<Outgoing>, now: Instant| {
                while let Some(o) = f.next_send(now, SystemTime::now(), false) {
                    sink.push(o);
                }
            };
            for op in ops {
                match op {
                    Op::Accept => {
                        f.accept(sample(next, 300), now);
                        next += 1;
                    }
                    Op::Deliver(i) | Op::Reject(i) if !sink.is_empty() => {
                        let o = sink.remove(i % sink.len());
                        done.insert(seq(&o));
                        f.on_ack(if matches!(op, Op::Deliver(_)) {
                            Ack::Delivered(o.ticket, None)
                        } else {
                            Ack::Rejected(o.ticket, "refused".into())
                        });
                    }
                    Op::Deliver(_) | Op::Reject(_) => {}
                    Op::Wait(ms) => {
                        now += Duration::from_millis(ms);
                        f.tick(now, SystemTime::now());
                    }
                    Op::Restart => {
                        // The sink gives up what it holds undelivered.
                        sink.clear();
                        proptest::prop_assert_eq!(f.finish(), 0);
                        f = forwarder(mode, 4, &mem);
                    }
                }
                pump(&mut f, &mut sink, now);
                proptest::prop_assert!(sink.len() <= 4, "window exceeded: {}", sink.len());
            }
            // The broker is healthy from now on: deliver everything.
            for _ in 0..10_000 {
                now += Duration::from_millis(250);
                f.tick(now, SystemTime::now());
                pump(&mut f, &mut sink, now);
                for o in sink.drain(..) {
                    done.insert(seq(&o));
                    f.on_ack(Ack::Delivered(o.ticket, None));
                }
                if !f.pending() {
                    break;
                }
            }
            let all: BTreeSet<u64> = (0..next).collect();
            proptest::prop_assert_eq!(&done, &all);
            f.tick(now + Duration::from_secs(1), SystemTime::now());
            proptest::prop_assert_eq!(f.metrics.spool_records.load(Relaxed), 0);
        }
    }
}
