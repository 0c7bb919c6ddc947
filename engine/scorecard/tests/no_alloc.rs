//! Scoring an event allocates nothing in our code once a scorecard is
//! prepared: the input row, the probability, the points and the reason-code
//! selection all use the scorecard's own buffers. Checked with a counting
//! global allocator (one test in this binary, so no other test allocates
//! concurrently). LightGBM's own C++ allocations do not go through Rust's
//! allocator and are not counted here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use riskd_core::{Decoder, KeyRing, Limits};
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};
use riskd_scorecard::{ModelSet, ModelSpec, Scorecard};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn scoring_with_reason_codes_allocates_nothing() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let features = Arc::new(FeatureSet::load(&repo.join("features")).unwrap());
    let spec = Arc::new(ModelSpec::load(&repo.join("models/a_card"), &features).unwrap());
    let set = ModelSet::new(vec![spec.clone()]).unwrap();
    let keys = KeyRing::from_toml(
        &format!(
            "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
            "77".repeat(32),
            "88".repeat(32)
        ),
        "test-keys",
    )
    .unwrap();
    let decoder = Decoder::new(Limits::default(), keys.clone());
    let mut engine = FeatureEngine::new(features.clone(), keys.protect("feature-state-key", "").0);
    let mut fv = FeatureVector::default();
    let mut cases = Vec::new();
    for line in std::fs::read_to_string(repo.join("replay-data/events.jsonl")).unwrap().lines() {
        let Ok(ev) = decoder.decode(line.as_bytes()) else { continue };
        engine.update(&ev, &mut fv);
        if spec.scores(ev.kind) {
            cases.push((ev, fv.clone()));
        }
    }
    assert!(cases.len() > 200);
    let mut card = Scorecard::new(spec).unwrap();
    // Warm up: buffers reach their size.
    for (ev, fv) in &cases {
        card.score_event(ev, fv, 3).unwrap();
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let (mut reasons, mut points) = (0usize, 0.0f64);
    for _ in 0..4 {
        for (ev, fv) in &cases {
            let route = set.route(ev.kind, &ev.entities.user_id).unwrap();
            assert_eq!(route.decides, 0);
            let s = card.score_event(ev, fv, 3).unwrap();
            points += s.points;
            reasons += card.adverse().len();
            let s = card.score_event(ev, fv, 0).unwrap();
            points += s.points;
        }
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocated, 0, "{allocated} allocations while scoring {} events", cases.len() * 8);
    assert!(reasons > cases.len(), "reason codes were computed: {reasons}");
    assert!(points.is_finite());
}
