//! The bounded queue between the source thread and the encoder thread, with the configured
//! overflow policy. Blocking (std `Mutex` + `Condvar`): both ends are plain threads.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use crate::config::OverflowPolicy;

/// What [`FrameQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<T> {
    /// Queued.
    Accepted,
    /// Queued; the oldest waiting item was removed to make room and is returned.
    DroppedOldest(T),
    /// Not queued: the queue was full (`drop_newest`). The item is returned.
    DroppedNewest(T),
    /// Not queued: the queue is closed. The item is returned.
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer, multi-consumer FIFO with an overflow policy.
pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    policy: OverflowPolicy,
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `capacity` (≥ 1) items.
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        FrameQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
            policy,
        }
    }

    /// Adds `item`, applying the overflow policy when full (`Block` waits for room or close).
    pub fn push(&self, item: T) -> Push<T> {
        let mut st = self.state.lock().unwrap();
        loop {
            if st.closed {
                return Push::Closed(item);
            }
            if st.items.len() < self.capacity {
                st.items.push_back(item);
                self.not_empty.notify_one();
                return Push::Accepted;
            }
            match self.policy {
                // `Auto` is resolved by the caller (`OverflowPolicy::for_source`); were it not,
                // dropping the oldest is what a live source gets.
                OverflowPolicy::Auto | OverflowPolicy::DropOldest => {
                    let old = st.items.pop_front().expect("full queue is not empty");
                    st.items.push_back(item);
                    self.not_empty.notify_one();
                    return Push::DroppedOldest(old);
                }
                OverflowPolicy::DropNewest => return Push::DroppedNewest(item),
                OverflowPolicy::Block => st = self.not_full.wait(st).unwrap(),
            }
        }
    }

    /// Takes the oldest item, waiting while the queue is empty; `None` once it is closed and
    /// empty (everything pushed before `close` is still delivered).
    pub fn pop(&self) -> Option<T> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(item) = st.items.pop_front() {
                self.not_full.notify_one();
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st = self.not_empty.wait(st).unwrap();
        }
    }

    /// Refuses further pushes and wakes every waiter. Items already queued stay poppable.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().items.len()
    }

    /// `true` when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let q = FrameQueue::new(2, OverflowPolicy::DropOldest);
        assert_eq!(q.push(1), Push::Accepted);
        assert_eq!(q.push(2), Push::Accepted);
        assert_eq!(q.push(3), Push::DroppedOldest(1));
        q.close();
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn drop_newest_keeps_the_oldest() {
        let q = FrameQueue::new(1, OverflowPolicy::DropNewest);
        assert_eq!(q.push(1), Push::Accepted);
        assert_eq!(q.push(2), Push::DroppedNewest(2));
        assert_eq!(q.pop(), Some(1));
    }

    #[test]
    fn block_waits_for_room_and_loses_nothing() {
        let q = Arc::new(FrameQueue::new(1, OverflowPolicy::Block));
        let p = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    assert_eq!(q.push(i), Push::Accepted);
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        while let Some(i) = q.pop() {
            got.push(i);
        }
        p.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn close_wakes_a_blocked_pusher() {
        let q = Arc::new(FrameQueue::new(1, OverflowPolicy::Block));
        q.push(0);
        let p = {
            let q = q.clone();
            std::thread::spawn(move || q.push(1))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.close();
        assert_eq!(p.join().unwrap(), Push::Closed(1));
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), None);
    }
}
