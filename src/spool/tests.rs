use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::format::tests::sample;
use super::*;

fn opts(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        max_age: None,
        segment_bytes,
    }
}

fn seq_of(out: &Outgoing) -> u64 {
    out.record.header(header::SEQ).unwrap().parse().unwrap()
}

/// Drains the backlog: (spool id, seq header) in the order handed out.
fn drain<S: Storage>(s: &mut Spool<S>) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while let Some((id, out)) = s.next_backlog(SystemTime::now()).unwrap() {
        assert_eq!(out.record.header(header::REPLAYED), Some("1"));
        got.push((id, seq_of(&out)));
    }
    got
}

fn segment_files(m: &MemStorage) -> usize {
    m.list()
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .count()
}

#[test]
fn backlog_comes_out_oldest_first_once_committed_and_acks_unlink_segments() {
    let mem = MemStorage::new();
    let (mut s, rec) = Spool::open(mem.clone(), opts(1 << 20, 4096)).unwrap();
    assert_eq!(rec, Recovery::default());
    for i in 0..20 {
        s.append(&sample(i, 1000), false).unwrap();
    }
    // Nothing is backlog before the commit (only the segments rolled so far are synced).
    let mut out_of_order = s.next_backlog(SystemTime::now()).unwrap();
    assert!(out_of_order.as_ref().is_none_or(|(id, _)| *id == 0));
    if let Some((id, _)) = out_of_order.take() {
        s.release(id);
    }
    s.commit().unwrap();
    let got = drain(&mut s);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(segment_files(&mem) > 3);
    for (id, _) in &got {
        s.ack(*id).unwrap();
    }
    // Only the segment taking appends is left.
    assert_eq!(segment_files(&mem), 1);
    assert_eq!(s.stats().records, 0);
    let before = mem.total_bytes();
    s.append(&sample(20, 1000), false).unwrap();
    assert!(mem.total_bytes() > before);
}

#[test]
fn records_the_sink_holds_are_replayed_only_once_released() {
    let mem = MemStorage::new();
    let (mut s, _) = Spool::open(mem, opts(1 << 20, 1 << 16)).unwrap();
    let a = s.append(&sample(0, 10), true).unwrap();
    let b = s.append(&sample(1, 10), false).unwrap();
    s.commit().unwrap();
    assert_eq!(drain(&mut s), vec![(b, 1)]);
    s.release(a);
    s.release(b);
    assert_eq!(drain(&mut s), vec![(a, 0), (b, 1)]);
    s.ack(a).unwrap();
    s.release(a); // acked: stays gone
    s.release(b);
    assert_eq!(drain(&mut s), vec![(b, 1)]);
}

#[test]
fn a_full_spool_drops_the_oldest_segment_counts_it_and_stays_bounded() {
    let mem = MemStorage::new();
    let max = 64 * 1024;
    let seg = 8 * 1024;
    let (mut s, _) = Spool::open(mem.clone(), opts(max, seg)).unwrap();
    let n = 500u64;
    for i in 0..n {
        s.append(&sample(i, 900), false).unwrap();
        assert!(
            mem.total_bytes() <= max + seg,
            "{} at {i}",
            mem.total_bytes()
        );
    }
    s.commit().unwrap();
    let kept = drain(&mut s);
    let dropped = s.take_dropped();
    assert_eq!(dropped.full + kept.len() as u64, n);
    assert!(dropped.full > 0);
    // What is kept is the newest, contiguous, in order.
    let seqs: Vec<u64> = kept.iter().map(|k| k.1).collect();
    assert_eq!(seqs, (n - kept.len() as u64..n).collect::<Vec<_>>());
    assert_eq!(s.take_dropped(), Dropped::default());
}

#[test]
fn frames_older_than_max_age_are_expired_and_counted() {
    let mem = MemStorage::new();
    let o = SpoolOptions {
        max_age: Some(Duration::from_secs(60)),
        ..opts(1 << 20, 1 << 16)
    };
    let (mut s, _) = Spool::open(mem, o).unwrap();
    for i in 0..10 {
        s.append(&sample(i, 10), false).unwrap();
    }
    s.commit().unwrap();
    // sample(i) was captured at 1.7e15 µs + i: 10 s after that nothing is old.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
    s.expire(t0 + Duration::from_secs(10)).unwrap();
    assert_eq!(s.stats().backlog, 10);
    // 60 s + 5 µs later: ids 0..=4 are older than a minute.
    s.expire(t0 + Duration::from_secs(60) + Duration::from_micros(5))
        .unwrap();
    assert_eq!(s.take_dropped().expired, 5);
    let got = s
        .next_backlog(t0 + Duration::from_secs(60) + Duration::from_micros(7))
        .unwrap()
        .unwrap();
    assert_eq!(seq_of(&got.1), 7);
    assert_eq!(s.take_dropped().expired, 2);
}

#[test]
fn a_full_disk_hands_records_back_and_spooling_resumes_when_space_returns() {
    let mem = MemStorage::new();
    let (mut s, _) = Spool::open(mem.clone(), opts(1 << 20, 1 << 16)).unwrap();
    s.append(&sample(0, 10), false).unwrap();
    s.commit().unwrap();
    mem.set_full(true);
    match s.append(&sample(1, 10), false) {
        Err(SpoolError::Io(e)) => assert_eq!(e.raw_os_error(), Some(28)),
        other => panic!("{other:?}"),
    }
    mem.set_full(false);
    let c = s.append(&sample(2, 10), false).unwrap();
    s.commit().unwrap();
    assert_eq!(drain(&mut s), vec![(0, 0), (c, 2)]);
    // The failed write left nothing behind: a reopen reads the same two records.
    drop(s);
    let (mut s, rec) = Spool::open(mem, opts(1 << 20, 1 << 16)).unwrap();
    assert_eq!((rec.records, rec.corrupt, rec.torn_bytes), (2, 0, 0));
    assert_eq!(drain(&mut s).len(), 2);
}

/// A storage whose syncs fail on demand, to check what a failed commit hands back.
#[derive(Clone)]
struct FailingSync {
    mem: MemStorage,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Storage for FailingSync {
    fn list(&self) -> io::Result<Vec<String>> {
        self.mem.list()
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.mem.read(name)
    }
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.mem.read_at(name, offset, len)
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.mem.len(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.mem.append(name, data)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.mem.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.mem.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.mem.remove(name)
    }
    fn put(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.mem.put(name, data)
    }
}

#[test]
fn a_failed_commit_returns_exactly_the_uncommitted_ids() {
    let st = FailingSync {
        mem: MemStorage::new(),
        fail: Default::default(),
    };
    let (mut s, _) = Spool::open(st.clone(), opts(1 << 20, 1 << 16)).unwrap();
    let kept = s.append(&sample(0, 10), false).unwrap();
    s.commit().unwrap();
    let a = s.append(&sample(1, 10), true).unwrap();
    let b = s.append(&sample(2, 10), false).unwrap();
    st.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let (e, ids) = s.commit().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(5));
    assert_eq!(ids, vec![a, b]);
    st.fail.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s.stats().records, 1);
    let d = s.append(&sample(3, 10), false).unwrap();
    s.commit().unwrap();
    assert_eq!(drain(&mut s), vec![(kept, 0), (d, 3)]);
}

fn reopen_closed(s: Spool<MemStorage>, o: SpoolOptions) -> (Spool<MemStorage>, Recovery) {
    let mut s = s;
    s.close().unwrap();
    Spool::open(s.into_storage(), o).unwrap()
}

#[test]
fn a_clean_close_resends_nothing_acknowledged() {
    let o = opts(1 << 20, 1 << 16);
    let (mut s, _) = Spool::open(MemStorage::new(), o).unwrap();
    for i in 0..6 {
        s.append(&sample(i, 100), false).unwrap();
    }
    s.commit().unwrap();
    let got = drain(&mut s);
    for (id, _) in &got[..4] {
        s.ack(*id).unwrap();
    }
    // 4 and 5 are still with the sink at shutdown: they must come back.
    let (mut s, rec) = reopen_closed(s, o);
    assert_eq!((rec.records, rec.acked), (2, 4));
    assert_eq!(
        drain(&mut s).iter().map(|g| g.1).collect::<Vec<_>>(),
        [4, 5]
    );
    // New ids never repeat old ones.
    let id = s.append(&sample(6, 10), false).unwrap();
    assert!(id > got.last().unwrap().0);
}

#[test]
fn damage_in_the_middle_costs_one_record_and_the_tail_is_truncated() {
    let mem = MemStorage::new();
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = Spool::open(mem.clone(), o).unwrap();
    for i in 0..5 {
        s.append(&sample(i, 200), false).unwrap();
    }
    s.commit().unwrap();
    drop(s);
    let name = mem
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".seg"))
        .unwrap();
    let rec_len = format::encode(0, &sample(0, 200)).unwrap().len();
    mem.edit(&name, |d| {
        d[2 * rec_len + 100] ^= 1; // record 2's body
        d.extend_from_slice(&[0xEC; 37]); // a torn tail
    });
    let (mut s, rec) = Spool::open(mem.clone(), o).unwrap();
    assert_eq!((rec.records, rec.corrupt, rec.torn_bytes), (4, 1, 37));
    assert_eq!(
        drain(&mut s).iter().map(|g| g.1).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    assert_eq!(mem.read(&name).unwrap().len(), 5 * rec_len);
}

#[test]
fn a_directory_spool_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1 << 16);
    let (mut s, _) = Spool::open(DirStorage::open(tmp.path()).unwrap(), o).unwrap();
    for i in 0..50 {
        s.append(&sample(i, 3000), false).unwrap();
    }
    s.commit().unwrap();
    drop(s); // no close: like a kill -9 after the commit
    let (mut s, rec) = Spool::open(DirStorage::open(tmp.path()).unwrap(), o).unwrap();
    assert_eq!(rec.records, 50);
    let got = drain(&mut s);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    for (id, _) in got {
        s.ack(id).unwrap();
    }
    s.close().unwrap();
    let (_, rec) = Spool::open(DirStorage::open(tmp.path()).unwrap(), o).unwrap();
    assert_eq!(rec.records, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Commit,
    /// Hand out the backlog's next record and acknowledge it.
    Deliver,
    /// Power loss keeping this share (0–255 of 255) of each file's unsynced bytes.
    PowerLoss(u8),
    /// Clean close and open.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..3000).prop_map(Op::Append),
        2 => Just(Op::Commit),
        3 => Just(Op::Deliver),
        1 => any::<u8>().prop_map(Op::PowerLoss),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Against a model: after any sequence of appends, commits, deliveries, clean restarts
    /// and power losses, every committed and undelivered record is still there, intact;
    /// only uncommitted ones may be lost; nothing delivered comes back after a clean
    /// restart; nothing corrupt is ever handed out.
    #[test]
    fn power_loss_loses_at_most_the_uncommitted(ops in proptest::collection::vec(op(), 1..60)) {
        let mem = MemStorage::new();
        let o = opts(1 << 30, 16 * 1024);
        let (mut s, _) = Spool::open(mem.clone(), o).unwrap();
        let mut next = 0u64;
        let mut committed = BTreeSet::new();
        let mut uncommitted = BTreeSet::new();
        let mut delivered = BTreeSet::new();
        let mut lens = std::collections::HashMap::new();
        for op in ops {
            match op {
                Op::Append(len) => {
                    s.append(&sample(next, len), false).unwrap();
                    if s.uncommitted() == 1 {
                        // It started a segment: what came before is committed.
                        committed.append(&mut uncommitted);
                    }
                    lens.insert(next, len);
                    uncommitted.insert(next);
                    next += 1;
                }
                Op::Commit => {
                    s.commit().unwrap();
                    committed.append(&mut uncommitted);
                }
                Op::Deliver => {
                    if let Some((id, out)) = s.next_backlog(SystemTime::now()).unwrap() {
                        let seq = seq_of(&out);
                        prop_assert!(committed.contains(&seq), "uncommitted {} handed out", seq);
                        prop_assert_eq!(&out.record.value, &sample(seq, lens[&seq]).record.value);
                        s.ack(id).unwrap();
                        committed.remove(&seq);
                        delivered.insert(seq);
                    }
                }
                Op::PowerLoss(share) => {
                    drop(s);
                    mem.power_loss(|_, n| n * share as usize / 255);
                    let (s2, _) = Spool::open(mem.clone(), o).unwrap();
                    s = s2;
                    // What survived uncommitted became backlog (it is on disk now); the
                    // rest is lost. Acknowledged records of kept segments may come back.
                    let mut back = BTreeSet::new();
                    let mut probe = Vec::new();
                    while let Some((id, out)) = s.next_backlog(SystemTime::now()).unwrap() {
                        let seq = seq_of(&out);
                        prop_assert_eq!(&out.record.value, &sample(seq, lens[&seq]).record.value);
                        back.insert(seq);
                        probe.push(id);
                    }
                    for id in probe {
                        s.release(id);
                    }
                    for c in &committed {
                        prop_assert!(back.contains(c), "committed {} lost: {:?}", c, back);
                    }
                    for b in &back {
                        prop_assert!(committed.contains(b) || uncommitted.contains(b) || delivered.contains(b));
                    }
                    delivered.retain(|d| !back.contains(d));
                    committed = back;
                    uncommitted.clear();
                }
                Op::Restart => {
                    let (s2, rec) = reopen_closed(s, o);
                    s = s2;
                    committed.append(&mut uncommitted);
                    prop_assert_eq!(rec.records, committed.len() as u64);
                }
            }
        }
    }
}

#[test]
fn a_damaged_body_in_an_older_segment_is_dropped_at_replay_and_counted() {
    let mem = MemStorage::new();
    let o = opts(1 << 20, 2048);
    let (mut s, _) = Spool::open(mem.clone(), o).unwrap();
    for i in 0..12 {
        s.append(&sample(i, 400), false).unwrap();
    }
    s.commit().unwrap();
    drop(s);
    let mut segs: Vec<String> = mem
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3);
    // The second record's body of the first segment.
    let rec_len = format::encode(0, &sample(0, 400)).unwrap().len();
    mem.edit(&segs[0], |d| d[rec_len + 200] ^= 0x40);
    let (mut s, rec) = Spool::open(mem, o).unwrap();
    assert_eq!((rec.records, rec.corrupt), (12, 0), "headers only at open");
    let got: Vec<u64> = drain(&mut s).iter().map(|g| g.1).collect();
    assert_eq!(got, [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(s.take_dropped().corrupt, 1);
}

#[test]
fn records_the_sink_holds_are_evicted_not_counted_when_the_spool_is_full() {
    let (mut s, _) = Spool::open(MemStorage::new(), opts(16 * 1024, 2048)).unwrap();
    let held = s.append(&sample(0, 900), true).unwrap();
    for i in 1..60 {
        s.append(&sample(i, 900), false).unwrap();
    }
    let evicted = s.take_evicted();
    assert_eq!(evicted, vec![held]);
    let kept = s.stats().records;
    // 60 appended: the held one evicted (not lost), the rest either kept or counted.
    assert_eq!(s.take_dropped().full + kept + 1, 60);
    assert!(s.take_evicted().is_empty());
}

#[test]
fn a_fully_acknowledged_newest_segment_is_retired_so_a_crash_resends_little() {
    let mem = MemStorage::new();
    let o = opts(1 << 30, 8 << 20);
    let (mut s, _) = Spool::open(mem.clone(), o).unwrap();
    // "always" mode with a healthy sink: append, commit, deliver, 400 times 10 KB.
    for i in 0..400 {
        let id = s.append(&sample(i, 10_000), false).unwrap();
        s.commit().unwrap();
        let (got, _) = s.next_backlog(SystemTime::now()).unwrap().unwrap();
        assert_eq!(got, id);
        s.ack(id).unwrap();
    }
    // Power loss: everything was acknowledged, but acknowledgements are in memory only.
    drop(s);
    mem.power_loss(|_, _| 0);
    let (_, rec) = Spool::open(mem.clone(), o).unwrap();
    assert!(
        rec.bytes < RETIRE_ACKED_BYTES + 11_000,
        "a crash resends {} records ({} bytes)",
        rec.records,
        rec.bytes
    );
    assert!(mem.total_bytes() < RETIRE_ACKED_BYTES + 11_000);
}

#[test]
fn a_damaged_acked_file_is_ignored_so_nothing_undelivered_is_skipped() {
    let o = opts(1 << 20, 1 << 16);
    let mem = MemStorage::new();
    let (mut s, _) = Spool::open(mem.clone(), o).unwrap();
    for i in 0..4 {
        s.append(&sample(i, 100), false).unwrap();
    }
    s.commit().unwrap();
    let got = drain(&mut s);
    s.ack(got[0].0).unwrap();
    s.close().unwrap();
    mem.edit("acked", |d| d[2] ^= 0x08);
    let (mut s, rec) = Spool::open(mem.clone(), o).unwrap();
    assert_eq!((rec.records, rec.acked), (4, 0), "all four sent again");
    assert_eq!(drain(&mut s).len(), 4);
    assert!(mem.read("acked").is_err(), "the damaged file is gone");
}
