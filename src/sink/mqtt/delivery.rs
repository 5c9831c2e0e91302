//! The MQTT sink's delivery ledger: which frames are delivered, which must be sent again.
//!
//! QoS 1 delivery is known only from the PUBACK, which names a packet id, and rumqttc hands
//! out packet ids only as a PUBLISH is written to the connection. So a frame goes through:
//! accepted (kept until delivered) → queued on the current connection (awaiting its packet
//! id, in the order publishes were queued) → sent with a packet id → acknowledged, which
//! delivers it. Control messages (status, state) share the connection's order but are not
//! tracked. A reconnect forgets the connection's packet ids (rumqttc forgets its session
//! when the broker does not resume it), and every frame not yet acknowledged is published
//! again, oldest first: a frame whose PUBACK was lost may arrive twice, never zero times.
//!
//! Pure: no I/O, no clock. Property-tested against a model below.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// The ledger of one sink. `T` is the frame.
#[derive(Debug)]
pub(crate) struct PubackLedger<T> {
    /// Accepted and not yet delivered, by id (ids increase with acceptance).
    unacked: BTreeMap<u64, T>,
    next_id: u64,
    /// Publishes queued on the current connection, waiting for their packet id, in order:
    /// `Some(frame id)`, or `None` for a control message.
    awaiting: VecDeque<Option<u64>>,
    /// Packet ids of the current connection → frame id.
    by_pkid: HashMap<u16, u64>,
}

impl<T> Default for PubackLedger<T> {
    fn default() -> Self {
        PubackLedger {
            unacked: BTreeMap::new(),
            next_id: 0,
            awaiting: VecDeque::new(),
            by_pkid: HashMap::new(),
        }
    }
}

impl<T> PubackLedger<T> {
    /// Takes a frame in; returns its id. It stays until [`on_sent`](Self::on_sent) (QoS 0)
    /// or [`on_acked`](Self::on_acked) delivers it.
    pub(crate) fn accept(&mut self, frame: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.unacked.insert(id, frame);
        id
    }

    /// A publish of frame `id` (or, `None`, of a control message) was queued on the
    /// current connection.
    pub(crate) fn queued(&mut self, id: Option<u64>) {
        self.awaiting.push_back(id);
    }

    /// The next queued publish went out with `pkid` (0 for QoS 0). At QoS 0 that is all
    /// MQTT will ever say, so a frame is delivered now and returned.
    pub(crate) fn on_sent(&mut self, pkid: u16) -> Option<T> {
        let id = self.awaiting.pop_front()??;
        if pkid == 0 {
            return self.unacked.remove(&id);
        }
        self.by_pkid.insert(pkid, id);
        None
    }

    /// A PUBACK for `pkid` on the current connection: returns the frame it delivers, if
    /// any (a control message's, or a frame already delivered by an earlier PUBACK, gives
    /// `None`).
    pub(crate) fn on_acked(&mut self, pkid: u16) -> Option<T> {
        let id = self.by_pkid.remove(&pkid)?;
        self.unacked.remove(&id)
    }

    /// A new connection, before anything is published on it: the old one's packet ids and
    /// queue mean nothing any more.
    pub(crate) fn new_connection(&mut self) {
        self.awaiting.clear();
        self.by_pkid.clear();
    }

    /// The ids of the frames not delivered yet, oldest first: what a new connection
    /// publishes again (queue each with [`queued`](Self::queued) as it is published).
    pub(crate) fn undelivered(&self) -> Vec<u64> {
        self.unacked.keys().copied().collect()
    }

    /// The frame with id `id`, while it is not delivered.
    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        self.unacked.get(&id)
    }

    /// Frames accepted and not yet delivered.
    pub(crate) fn len(&self) -> usize {
        self.unacked.len()
    }

    /// `true` when every accepted frame is delivered.
    pub(crate) fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_is_delivered_by_its_puback_and_resent_after_a_reconnect() {
        let mut l = PubackLedger::default();
        let a = l.accept("a");
        l.queued(None); // the retained `online` status
        l.queued(Some(a));
        assert_eq!(l.on_sent(1), None, "the status");
        assert_eq!(l.on_sent(2), None);
        let b = l.accept("b");
        l.queued(Some(b));
        assert_eq!(l.on_sent(3), None);
        assert_eq!(l.on_acked(2), Some("a"));
        assert_eq!(l.on_acked(2), None, "delivered once");
        assert_eq!(l.on_acked(1), None, "the status is not a frame");
        // The connection drops before b's PUBACK: b goes again, and the old packet id 3
        // means nothing on the new connection.
        l.new_connection();
        assert_eq!(l.undelivered(), [b]);
        l.queued(Some(b));
        assert_eq!(l.on_acked(3), None);
        assert_eq!(l.on_sent(1), None);
        assert_eq!(l.on_acked(1), Some("b"));
        assert!(l.is_empty());
        // QoS 0: delivered when written.
        let c = l.accept("c");
        l.queued(Some(c));
        assert_eq!(l.on_sent(0), Some("c"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A frame comes in and is published (queued) on the connection.
        Publish,
        /// A control message is published.
        Control,
        /// rumqttc writes the next queued publish, with a fresh packet id (or 0 for QoS 0).
        Sent { qos0: bool },
        /// The broker acknowledges one of the packet ids in flight on this connection (or a
        /// stale or unknown one).
        Ack(prop::sample::Index),
        /// The connection drops and a new one comes up; everything unacknowledged is
        /// published again.
        Reconnect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Publish),
            1 => Just(Op::Control),
            3 => Just(Op::Sent { qos0: false }),
            1 => Just(Op::Sent { qos0: true }),
            3 => any::<prop::sample::Index>().prop_map(Op::Ack),
            1 => Just(Op::Reconnect),
        ]
    }

    proptest! {
        /// Against a model of the connection: a frame is delivered only by a PUBACK for the
        /// packet id its latest publish on the current connection got (or when written at
        /// QoS 0), at most once; a frame not delivered is always resent by the next
        /// reconnect; nothing accepted is lost.
        #[test]
        fn matches_the_model(ops in prop::collection::vec(op(), 0..300)) {
            let mut l: PubackLedger<u64> = PubackLedger::default();
            // Model: undelivered frame ids; the connection's queue of publishes waiting for
            // a packet id; packet ids in flight on this connection → frame (None: control).
            let mut undelivered: Vec<u64> = Vec::new();
            let mut queue: VecDeque<Option<u64>> = VecDeque::new();
            let mut in_flight: Vec<(u16, Option<u64>)> = Vec::new();
            let mut stale_pkids: Vec<u16> = Vec::new();
            let mut next_pkid = 1u16;
            let mut delivered: Vec<u64> = Vec::new();
            let mut accepted = 0u64;
            for op in ops {
                match op {
                    Op::Publish => {
                        let id = l.accept(accepted);
                        prop_assert_eq!(id, accepted);
                        accepted += 1;
                        undelivered.push(id);
                        l.queued(Some(id));
                        queue.push_back(Some(id));
                    }
                    Op::Control => {
                        l.queued(None);
                        queue.push_back(None);
                    }
                    Op::Sent { qos0 } => {
                        let Some(what) = queue.pop_front() else { continue };
                        if qos0 {
                            let got = l.on_sent(0);
                            let want = what.filter(|id| undelivered.contains(id));
                            prop_assert_eq!(got, want);
                            if let Some(id) = want {
                                undelivered.retain(|u| *u != id);
                                delivered.push(id);
                            }
                        } else {
                            let pkid = next_pkid;
                            next_pkid = next_pkid.wrapping_add(1).max(1);
                            prop_assert_eq!(l.on_sent(pkid), None);
                            in_flight.retain(|(p, _)| *p != pkid);
                            in_flight.push((pkid, what));
                        }
                    }
                    Op::Ack(i) => {
                        let all: Vec<u16> = in_flight.iter().map(|f| f.0).chain(stale_pkids.iter().copied()).collect();
                        if all.is_empty() { continue }
                        let pkid = all[i.index(all.len())];
                        let got = l.on_acked(pkid);
                        let want = in_flight
                            .iter()
                            .position(|(p, _)| *p == pkid)
                            .map(|k| in_flight.remove(k))
                            .and_then(|(_, what)| what)
                            .filter(|id| undelivered.contains(id));
                        prop_assert_eq!(got, want);
                        if let Some(id) = want {
                            undelivered.retain(|u| *u != id);
                            delivered.push(id);
                        }
                    }
                    Op::Reconnect => {
                        stale_pkids.extend(in_flight.drain(..).map(|f| f.0));
                        queue.clear();
                        l.new_connection();
                        // A control message may go out first on the new connection.
                        l.queued(None);
                        queue.push_back(None);
                        let again = l.undelivered();
                        prop_assert_eq!(&again, &undelivered, "everything undelivered, oldest first");
                        for id in again {
                            l.queued(Some(id));
                            queue.push_back(Some(id));
                        }
                        next_pkid = 1;
                    }
                }
                prop_assert_eq!(l.len(), undelivered.len());
                for id in &undelivered {
                    prop_assert_eq!(l.get(*id), Some(id));
                }
            }
            // Nothing lost, nothing delivered twice.
            let mut all: Vec<u64> = delivered.iter().chain(&undelivered).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..accepted).collect::<Vec<_>>());
        }
    }
}
