//! The bridge's acknowledgement ledger: which MQTT messages may be acknowledged now.
//!
//! A QoS 1 message is acknowledged (PUBACK) only once Kafka has acknowledged its record, so
//! that a bridge killed at any moment loses nothing: the broker sends whatever was not
//! acknowledged again. MQTT also requires a client to send its PUBACKs in the order the
//! PUBLISH packets arrived (MQTT 3.1.1 §4.6, MQTT 5 §4.6), while Kafka's delivery reports
//! arrive in any order across partitions and retries. The ledger reconciles the two: each
//! message gets a slot in arrival order; a slot is finished when its record is delivered
//! (or dead-lettered, or dropped for a counted reason); acknowledgements are released for
//! the finished prefix only, oldest first, each exactly once.
//!
//! Pure: no I/O, no clock. Property-tested against a model below.

use std::collections::VecDeque;

/// The ledger. `A` is what an acknowledgement needs (the bridge: connection, QoS, packet
/// id); slots without one (QoS 0 messages) still hold their place in the order.
#[derive(Debug)]
pub(crate) struct AckLedger<A> {
    /// Slots in arrival order; `slots[0]` has id `first`.
    slots: VecDeque<Slot<A>>,
    first: u64,
}

#[derive(Debug)]
struct Slot<A> {
    ack: Option<A>,
    done: bool,
}

impl<A> Default for AckLedger<A> {
    fn default() -> Self {
        AckLedger {
            slots: VecDeque::new(),
            first: 0,
        }
    }
}

impl<A> AckLedger<A> {
    /// Records a message that just arrived; returns its slot id (increasing from 0).
    pub(crate) fn push(&mut self, ack: Option<A>) -> u64 {
        self.slots.push_back(Slot { ack, done: false });
        self.first + self.slots.len() as u64 - 1
    }

    /// Marks `slot` handled and appends to `ready`, in arrival order, the acknowledgements
    /// that may be sent now: those of the handled prefix of the ledger, each once. A slot
    /// that is unknown (already released) or finished twice changes nothing.
    pub(crate) fn finish(&mut self, slot: u64, ready: &mut VecDeque<A>) {
        if let Some(s) = slot
            .checked_sub(self.first)
            .and_then(|i| self.slots.get_mut(usize::try_from(i).ok()?))
        {
            s.done = true;
        }
        while self.slots.front().is_some_and(|s| s.done) {
            let s = self.slots.pop_front().expect("front exists");
            self.first += 1;
            ready.extend(s.ack);
        }
    }

    /// Slots not yet released (handled or not).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` when every slot has been released.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots whose message is not handled yet.
    pub(crate) fn unfinished(&self) -> usize {
        self.slots.iter().filter(|s| !s.done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn releases_the_finished_prefix_in_arrival_order() {
        let mut l = AckLedger::default();
        let mut ready = VecDeque::new();
        let ids: Vec<u64> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|a| l.push(Some(a)))
            .collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        l.finish(2, &mut ready);
        l.finish(1, &mut ready);
        assert!(ready.is_empty(), "a is not handled yet");
        l.finish(0, &mut ready);
        assert_eq!(ready, ["a", "b", "c"]);
        l.finish(0, &mut ready);
        l.finish(2, &mut ready);
        assert_eq!(ready.len(), 3, "released once");
        assert_eq!((l.len(), l.unfinished()), (1, 1));
        l.finish(3, &mut ready);
        assert_eq!(ready, ["a", "b", "c", "d"]);
        assert!(l.is_empty());
        assert_eq!(l.push(None), 4, "ids keep increasing");
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A message arrives, with an acknowledgement to send or none (QoS 0).
        Arrive(bool),
        /// The message at this index among those that arrived so far is handled.
        Finish(prop::sample::Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Arrive),
            any::<prop::sample::Index>().prop_map(Op::Finish),
        ]
    }

    proptest! {
        /// Against a model (a list of every message with its handled flag): what is released
        /// is exactly the acknowledgements of the longest handled prefix, in arrival order,
        /// each once; nothing is released while an earlier message is unhandled.
        #[test]
        fn matches_the_model(ops in prop::collection::vec(op(), 0..200)) {
            let mut l = AckLedger::default();
            let mut ready = VecDeque::new();
            // Model: (slot id, has ack, handled).
            let mut model: Vec<(u64, bool, bool)> = Vec::new();
            for op in ops {
                match op {
                    Op::Arrive(has_ack) => {
                        let id = l.push(has_ack.then_some(model.len() as u64));
                        prop_assert_eq!(id, model.len() as u64);
                        model.push((id, has_ack, false));
                    }
                    Op::Finish(i) if !model.is_empty() => {
                        let i = i.index(model.len());
                        model[i].2 = true;
                        l.finish(model[i].0, &mut ready);
                    }
                    Op::Finish(_) => {}
                }
                let prefix = model.iter().take_while(|m| m.2).count();
                let want: Vec<u64> = model[..prefix]
                    .iter()
                    .filter(|m| m.1)
                    .map(|m| m.0)
                    .collect();
                prop_assert_eq!(ready.iter().copied().collect::<Vec<_>>(), want);
                prop_assert_eq!(l.len(), model.len() - prefix);
                prop_assert_eq!(l.unfinished(), model.iter().filter(|m| !m.2).count());
            }
        }
    }
}
