//! The budget controller: which rung of the ladder to encode a frame at.
//!
//! A *ladder* is the list of encodings edgecam is willing to publish, best first: for JPEG,
//! full resolution at `quality_max`, `quality_max - step`, … `quality_min`, then smaller and
//! smaller resolutions at `quality_min`; for the lossless codecs, only resolutions. Encoded
//! size falls (almost always) as the rung index rises, so "the best rung that fits" is the
//! first rung whose encoding fits the value budget.
//!
//! [`RateController`] finds it without trying every rung: consecutive frames of a camera look
//! alike, so it starts at the rung that fitted last time (a steady scene costs one encode per
//! frame), gallops down when that no longer fits, and only occasionally probes one rung up to
//! win quality back. It does no I/O and keeps no clock: the encoder is passed in as a closure,
//! so the search is deterministic and property-tested.

/// One rung: output size and (JPEG only) quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// JPEG quality 1–100; `None` for lossless codecs.
    pub quality: Option<u8>,
}

/// Shape of a ladder, from `[encode]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderSpec {
    /// Highest quality (first rung); `None` builds a resolution-only (lossless) ladder.
    pub quality_max: Option<u8>,
    /// Lowest quality, used by every downscaled rung.
    pub quality_min: u8,
    /// Quality step between rungs, ≥ 1.
    pub quality_step: u8,
    /// Each downscale rung multiplies both sides by this percentage (10–95).
    pub downscale_percent: u8,
    /// No rung has a side shorter than this many pixels (unless the source already is).
    pub min_side_px: u32,
}

/// Builds the ladder for a `width`×`height` image, best rung first. Never empty: the first
/// rung is always full resolution.
pub fn ladder(spec: &LadderSpec, width: u32, height: u32) -> Vec<Rung> {
    let mut rungs = Vec::new();
    match spec.quality_max {
        Some(qmax) => {
            let qmin = spec.quality_min.min(qmax);
            let mut q = qmax as i32;
            while q > qmin as i32 {
                rungs.push(Rung {
                    width,
                    height,
                    quality: Some(q as u8),
                });
                q -= spec.quality_step.max(1) as i32;
            }
            rungs.push(Rung {
                width,
                height,
                quality: Some(qmin),
            });
        }
        None => rungs.push(Rung {
            width,
            height,
            quality: None,
        }),
    }
    let quality = spec.quality_max.map(|q| spec.quality_min.min(q));
    let pct = spec.downscale_percent.clamp(10, 95) as u64;
    let (mut w, mut h) = (width as u64, height as u64);
    loop {
        let (nw, nh) = ((w * pct / 100).max(1), (h * pct / 100).max(1));
        if nw < spec.min_side_px as u64 || nh < spec.min_side_px as u64 || (nw, nh) == (w, h) {
            break;
        }
        (w, h) = (nw, nh);
        rungs.push(Rung {
            width: w as u32,
            height: h as u32,
            quality,
        });
    }
    rungs
}

/// The rung of `new` that is the nearest equivalent of `old[index]`, for when the ladder is
/// rebuilt (a reload or command changed `[encode]`, or the frame size changed) and the
/// controller must not keep a bare index, which would point at an unrelated rung.
///
/// Size first: the rungs of `new` with the same width and height as the old rung, or, when
/// there are none, those whose pixel count is nearest to it (by ratio; a tie goes to the
/// smaller), which have the closest expected encoded size. Then quality, among the rungs of
/// that size: the highest quality not above the old rung's, so the new rung is expected to
/// be no larger than the old one; when every quality there is above it (a raised
/// `quality_min`), the lowest; a lossless rung (no quality) on either side maps to the best
/// rung of that size. `index` past the end of `old` means its last rung. Returns an index
/// into `new`. Panics if `old` or `new` is empty (a ladder never is).
pub fn equivalent_rung(old: &[Rung], index: usize, new: &[Rung]) -> usize {
    assert!(
        !old.is_empty() && !new.is_empty(),
        "a ladder has at least one rung"
    );
    let o = old[index.min(old.len() - 1)];
    let area = |r: &Rung| r.width as f64 * r.height as f64;
    let same = new
        .iter()
        .position(|r| (r.width, r.height) == (o.width, o.height));
    let first = same.unwrap_or_else(|| {
        let distance = |r: &Rung| (area(r).max(1.0) / area(&o).max(1.0)).ln().abs();
        let mut best = 0;
        for (i, r) in new.iter().enumerate() {
            let (d, db) = (distance(r), distance(&new[best]));
            if d < db - 1e-12 || ((d - db).abs() <= 1e-12 && area(r) < area(&new[best])) {
                best = i;
            }
        }
        // The first rung of that size.
        new.iter()
            .position(|r| (r.width, r.height) == (new[best].width, new[best].height))
            .unwrap_or(best)
    });
    let (w, h) = (new[first].width, new[first].height);
    let sized = new
        .iter()
        .enumerate()
        .skip(first)
        .take_while(|(_, r)| (r.width, r.height) == (w, h));
    let Some(q) = o.quality else {
        return first;
    };
    let mut lowest = first;
    for (i, r) in sized {
        match r.quality {
            None => return first,
            Some(rq) if rq <= q => return i,
            Some(_) => lowest = i,
        }
    }
    lowest
}

/// Every `PROBE_INTERVAL` frames that fit with little headroom, the controller tries one rung
/// better, so quality recovers when a scene gets simpler. Costs at most 1/16 extra encode
/// per frame in a steady scene.
pub const PROBE_INTERVAL: u32 = 16;

/// A frame fitting in less than this fraction of the budget probes one rung up at once: one
/// rung is a quality step (about 10–20 % bigger) or a downscale step (`1/p²`, about 1.8× at
/// 75 %), so the next rung probably fits too.
pub const EAGER_PROBE_FILL: f64 = 0.55;

/// Result of a successful [`RateController::fit`].
#[derive(Debug)]
pub struct Fitted<T> {
    /// Index of the chosen rung.
    pub rung: usize,
    /// What the encoder returned for it.
    pub output: T,
    /// Size of `output` in bytes.
    pub size: usize,
    /// Encoder calls spent on this frame.
    pub attempts: u32,
}

/// Why [`RateController::fit`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum FitError<E> {
    /// Even the last rung is bigger than the budget.
    BudgetUnreachable {
        /// Size of the last rung's encoding, bytes.
        smallest: usize,
        /// Encoder calls spent on this frame.
        attempts: u32,
    },
    /// The encoder failed.
    Encoder(E),
}

/// Remembers where the last frame fitted; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct RateController {
    last: usize,
    since_probe: u32,
    /// A rung recently seen not to fit; no eager probe goes back to it until the periodic
    /// probe does.
    ceiling: Option<usize>,
}

impl RateController {
    /// A controller that starts at the best rung.
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the rung the next frame starts from.
    pub fn start_rung(&self) -> usize {
        self.last
    }

    /// The ladder was rebuilt from `old` to `new` (both best first, non-empty): moves the
    /// controller's memory (where the last frame fitted, the rung seen not to fit above it)
    /// to the equivalent rungs of `new` ([`equivalent_rung`]), so the next frame starts at the
    /// same size and the nearest quality instead of at whatever rung now has the old index.
    pub fn remap(&mut self, old: &[Rung], new: &[Rung]) {
        let last = equivalent_rung(old, self.last, new);
        self.ceiling = self
            .ceiling
            .map(|c| equivalent_rung(old, c, new))
            .filter(|&c| c < last);
        self.last = last;
    }

    /// Finds the best rung of `rungs` (a ladder, best first, len ≥ 1) whose encoding is at
    /// most `budget` bytes. `encode(i)` encodes rung `i` and returns the output and its size.
    ///
    /// Errors: [`FitError::BudgetUnreachable`] when the last rung does not fit (the
    /// controller then starts the next frame from the last rung), [`FitError::Encoder`] when
    /// `encode` fails.
    pub fn fit<T, E>(
        &mut self,
        rungs: usize,
        budget: usize,
        mut encode: impl FnMut(usize) -> Result<(T, usize), E>,
    ) -> Result<Fitted<T>, FitError<E>> {
        assert!(rungs > 0, "a ladder has at least one rung");
        let mut attempts = 0u32;
        let mut run = |i: usize, attempts: &mut u32| {
            *attempts += 1;
            encode(i).map_err(FitError::Encoder)
        };
        let start = self.last.min(rungs - 1);
        let (out, size) = run(start, &mut attempts)?;
        if size <= budget {
            // Fits where the last frame did: maybe climb.
            let mut best = (start, out, size);
            let eager = (size as f64) < budget as f64 * EAGER_PROBE_FILL
                && self.ceiling != start.checked_sub(1);
            self.since_probe += 1;
            if best.0 > 0 && (eager || self.since_probe >= PROBE_INTERVAL) {
                self.since_probe = 0;
                self.ceiling = None;
                // Climb while the rung above fits and keeps lots of headroom.
                loop {
                    let i = best.0 - 1;
                    let (o, s) = run(i, &mut attempts)?;
                    if s > budget {
                        self.ceiling = Some(i);
                        break;
                    }
                    let keep_going = i > 0 && (s as f64) < budget as f64 * EAGER_PROBE_FILL;
                    best = (i, o, s);
                    if !keep_going {
                        break;
                    }
                }
            }
            self.last = best.0;
            return Ok(Fitted {
                rung: best.0,
                output: best.1,
                size: best.2,
                attempts,
            });
        }
        // Too big: gallop down (1, 2, 4, … rungs) to bracket the first fit, then bisect.
        let mut bad = start; // known not to fit
        let mut step = 1usize;
        let mut smallest = size;
        let found = loop {
            if bad == rungs - 1 {
                break None;
            }
            let i = (bad + step).min(rungs - 1);
            let (o, s) = run(i, &mut attempts)?;
            smallest = s;
            if s <= budget {
                break Some((i, o, s));
            }
            bad = i;
            step *= 2;
        };
        let Some(mut good) = found else {
            self.last = rungs - 1;
            self.since_probe = 0;
            return Err(FitError::BudgetUnreachable { smallest, attempts });
        };
        while good.0 - bad > 1 {
            let mid = bad + (good.0 - bad) / 2;
            let (o, s) = run(mid, &mut attempts)?;
            if s <= budget {
                good = (mid, o, s);
            } else {
                bad = mid;
            }
        }
        self.last = good.0;
        self.since_probe = 0;
        self.ceiling = Some(bad);
        Ok(Fitted {
            rung: good.0,
            output: good.1,
            size: good.2,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> LadderSpec {
        LadderSpec {
            quality_max: Some(90),
            quality_min: 40,
            quality_step: 5,
            downscale_percent: 75,
            min_side_px: 32,
        }
    }

    #[test]
    fn jpeg_ladder_is_qualities_then_downscales() {
        let l = ladder(&spec(), 1920, 1080);
        let q: Vec<_> = l.iter().take(11).map(|r| r.quality.unwrap()).collect();
        assert_eq!(q, vec![90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40]);
        assert!(l[..11].iter().all(|r| (r.width, r.height) == (1920, 1080)));
        assert_eq!(
            (l[11].width, l[11].height, l[11].quality),
            (1440, 810, Some(40))
        );
        let last = l.last().unwrap();
        assert!(last.width >= 32 && last.height >= 32);
        assert!(last.width * 75 / 100 < 32 || last.height * 75 / 100 < 32);
        // strictly shrinking after the quality rungs
        assert!(l[10..].windows(2).all(|w| w[1].width < w[0].width));
    }

    #[test]
    fn lossless_ladder_is_resolutions_only() {
        let s = LadderSpec {
            quality_max: None,
            ..spec()
        };
        let l = ladder(&s, 100, 100);
        assert_eq!(
            l[0],
            Rung {
                width: 100,
                height: 100,
                quality: None
            }
        );
        assert_eq!(
            l.iter().map(|r| r.width).collect::<Vec<_>>(),
            vec![100, 75, 56, 42]
        );
    }

    #[test]
    fn tiny_image_still_has_one_rung() {
        let l = ladder(&spec(), 8, 8);
        assert_eq!(l.len(), 11);
    }

    /// Sizes that fall with the rung index, like a real ladder.
    fn sizes_strategy() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..5_000, 1..40).prop_map(|mut v| {
            v.sort_unstable_by(|a, b| b.cmp(a));
            v
        })
    }

    proptest! {
        /// On monotone ladders the controller finds exactly the first rung that fits, from any
        /// starting state, or reports that none does.
        #[test]
        fn finds_best_fitting_rung(sizes in sizes_strategy(), budget in 0usize..6_000, start in 0usize..50, probe in 0u32..PROBE_INTERVAL) {
            let mut c = RateController { last: start, since_probe: probe, ceiling: None };
            let best = sizes.iter().position(|&s| s <= budget);
            let r = c.fit(sizes.len(), budget, |i| Ok::<_, ()>((i, sizes[i])));
            match (best, r) {
                (Some(b), Ok(f)) => {
                    prop_assert!(f.size <= budget);
                    prop_assert_eq!(f.output, f.rung);
                    let s0 = start.min(sizes.len() - 1);
                    if s0 < b {
                        // Started above the best fit: the search must land exactly on it.
                        prop_assert_eq!(f.rung, b);
                    } else {
                        // Started at or below it: never worse than the start, never
                        // better than possible.
                        prop_assert!(b <= f.rung && f.rung <= s0, "rung {} best {} start {}", f.rung, b, s0);
                    }
                }
                (None, Err(FitError::BudgetUnreachable { smallest, .. })) => {
                    prop_assert_eq!(smallest, *sizes.last().unwrap());
                }
                (b, r) => prop_assert!(false, "best {:?} got {:?}", b, r.map(|f| f.rung)),
            }
        }

        /// Whatever the sizes (even non-monotone), an Ok result always fits.
        #[test]
        fn never_returns_an_oversized_rung(sizes in prop::collection::vec(1usize..5_000, 1..40), budget in 0usize..6_000, start in 0usize..50) {
            let mut c = RateController { last: start, since_probe: 0, ceiling: None };
            if let Ok(f) = c.fit(sizes.len(), budget, |i| Ok::<_, ()>((i, sizes[i]))) {
                prop_assert!(f.size <= budget);
                prop_assert_eq!(sizes[f.rung], f.size);
            }
        }

        /// Rebuilding the ladder with another `quality_max` (higher or lower) moves the
        /// controller to the same size and the nearest quality not above the old one, and
        /// the next frame, at the budget the old rung just fitted, is encoded there.
        #[test]
        fn a_rebuilt_ladder_keeps_the_size_and_the_nearest_quality(
            qmin in 1u8..=90,
            qmax_old in 1u8..=100,
            qmax_new in 1u8..=100,
            step in 1u8..=20,
            pct in 10u8..=95,
            w in 16u32..2000,
            h in 16u32..2000,
            pick in 0usize..1000,
        ) {
            let (qmax_old, qmax_new) = (qmax_old.max(qmin), qmax_new.max(qmin));
            let spec_of = |qmax| LadderSpec {
                quality_max: Some(qmax),
                quality_min: qmin,
                quality_step: step,
                downscale_percent: pct,
                min_side_px: 16,
            };
            let old = ladder(&spec_of(qmax_old), w, h);
            let new = ladder(&spec_of(qmax_new), w, h);
            let at = pick % old.len();
            let (mut c, budget) = settled(&old, at);
            prop_assert_eq!(c.start_rung(), at);
            c.remap(&old, &new);
            let o = old[at];
            let q_old = o.quality.unwrap();
            let want = new
                .iter()
                .filter(|r| (r.width, r.height) == (o.width, o.height))
                .filter_map(|r| r.quality)
                .filter(|&q| q <= q_old)
                .max()
                .expect("quality_min is at every size");
            let f = c
                .fit(new.len(), budget, |i| Ok::<_, ()>((i, model_size(&new[i]))))
                .unwrap();
            let r = new[f.rung];
            prop_assert_eq!((r.width, r.height, r.quality), (o.width, o.height, Some(want)), "from {:?}", o);
        }

        /// A steady scene (same sizes every frame) costs at most 1 + 1/PROBE_INTERVAL
        /// encodes per frame once the controller has settled.
        #[test]
        fn steady_scene_costs_about_one_encode(sizes in sizes_strategy(), budget in 1usize..6_000) {
            prop_assume!(sizes.iter().any(|&s| s <= budget));
            let mut c = RateController::new();
            for _ in 0..4 {
                let _ = c.fit(sizes.len(), budget, |i| Ok::<_, ()>((i, sizes[i])));
            }
            let frames = 10 * PROBE_INTERVAL;
            let mut total = 0;
            for _ in 0..frames {
                total += c.fit(sizes.len(), budget, |i| Ok::<_, ()>((i, sizes[i]))).unwrap().attempts;
            }
            prop_assert!(total as f64 / frames as f64 <= 1.0 + 1.0 / PROBE_INTERVAL as f64 + 1e-9, "{} encodes over {} frames", total, frames);
        }
    }

    /// A size model strictly increasing in pixels and in quality (lossless: as quality 100).
    fn model_size(r: &Rung) -> usize {
        r.width as usize * r.height as usize * r.quality.unwrap_or(100) as usize / 10 + 1
    }

    /// Settles a controller on `rungs` where the best rung that fits is `at` (budget = its
    /// modelled size), and returns it with that budget.
    fn settled(rungs: &[Rung], at: usize) -> (RateController, usize) {
        let budget = model_size(&rungs[at]);
        let mut c = RateController::new();
        for _ in 0..3 {
            c.fit(rungs.len(), budget, |i| {
                Ok::<_, ()>((i, model_size(&rungs[i])))
            })
            .unwrap();
        }
        (c, budget)
    }

    #[test]
    fn a_live_quality_max_change_keeps_the_size_and_the_nearest_quality() {
        // The reported case: fitting at q55 768x576; `set/quality_max 60` used to send
        // frames at 324x243 (the rung with the old index in the new ladder).
        let old = ladder(&spec(), 768, 576);
        let at = old.iter().position(|r| r.quality == Some(55)).unwrap();
        let (mut c, budget) = settled(&old, at);
        assert_eq!(c.start_rung(), at);
        for (qmax, want) in [(60, 55), (95, 55), (50, 50), (40, 40)] {
            let new = ladder(
                &LadderSpec {
                    quality_max: Some(qmax),
                    ..spec()
                },
                768,
                576,
            );
            let mut c = c.clone();
            c.remap(&old, &new);
            let f = c
                .fit(new.len(), budget, |i| Ok::<_, ()>((i, model_size(&new[i]))))
                .unwrap();
            let r = new[f.rung];
            assert_eq!(
                (r.width, r.height, r.quality),
                (768, 576, Some(want)),
                "quality_max {qmax}"
            );
            assert_eq!(f.attempts, 1, "quality_max {qmax}");
        }
        // Back and forth: 90 -> 60 -> 90 lands where it started.
        let mid = ladder(
            &LadderSpec {
                quality_max: Some(60),
                ..spec()
            },
            768,
            576,
        );
        c.remap(&old, &mid);
        c.remap(&mid, &old);
        assert_eq!(c.start_rung(), at);
    }

    #[test]
    fn equivalent_rung_of_a_downscale_a_new_size_or_a_new_codec() {
        let old = ladder(&spec(), 768, 576);
        let small = old.iter().position(|r| r.width == 432).unwrap();
        // Higher quality_min: the downscaled rungs are now at q50, the nearest there.
        let raised = ladder(
            &LadderSpec {
                quality_min: 50,
                ..spec()
            },
            768,
            576,
        );
        let i = equivalent_rung(&old, small, &raised);
        assert_eq!(
            (raised[i].width, raised[i].quality),
            (432, Some(50)),
            "{raised:?}"
        );
        // Another downscale step: no 432x324 rung any more; the nearest pixel count.
        let other = ladder(
            &LadderSpec {
                downscale_percent: 50,
                ..spec()
            },
            768,
            576,
        );
        let i = equivalent_rung(&old, small, &other);
        assert_eq!((other[i].width, other[i].height), (384, 288), "{other:?}");
        // Lossless: resolutions only.
        let png = ladder(
            &LadderSpec {
                quality_max: None,
                ..spec()
            },
            768,
            576,
        );
        let i = equivalent_rung(&old, small, &png);
        assert_eq!((png[i].width, png[i].quality), (432, None));
        assert_eq!(equivalent_rung(&png, i, &old), small);
        // An index past the end is the last rung.
        assert_eq!(equivalent_rung(&old, 999, &old), old.len() - 1);
    }

    #[test]
    fn encoder_error_is_passed_through() {
        let mut c = RateController::new();
        let r = c.fit(3, 10, |_| Err::<((), usize), _>("boom"));
        assert!(matches!(r, Err(FitError::Encoder("boom"))));
    }
}
