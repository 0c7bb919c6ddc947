//! Evaluation allocates nothing once the verdict's hit vector has grown:
//! checked with a global allocator that counts allocations per thread. The
//! count is the evaluating thread's own: the test harness's main thread may
//! still be allocating (its bookkeeping for the test it just started) while
//! the loop runs, which a process-wide count would blame on evaluation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{rules_dir, starter_dir, starter_schema, MapSource};
use riskd_rules::{EventKind, RuleSet, Verdict};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // try_with: a thread being torn down has no counter left; not ours.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const STRINGY: &str = r#"
[[rule]]
id = "X1"
description = "string helpers, case folding, lists and CIDR on the hot path"
owner = "qa"
severity = 10
mode = "active"
events = ["login"]
when = """
lower(coalesce(entity.device_id, 'none')) in list('devs')
  and starts_with(upper(entity.user_id), 'U-')
  and contains(lower(entity.user_id), '-00')
  and ends_with(entity.user_id, '1')
  and entity.ip in list('nets')
  and entity.ip not in ['192.168.0.0/16', '2001:db8::/32']
  and len(entity.user_id) > 3
  and user.failed_logins_10m / max(user.applications_30d, 1) >= 2
"""
action = "alert"
reason = "EVERYTHING"
"#;

#[test]
fn evaluation_does_not_allocate() {
    let schema = starter_schema();
    let starter = RuleSet::load(&starter_dir(), &schema).unwrap_or_else(|d| panic!("{}", d.render()));
    let dir = rules_dir(&[
        ("chain.toml", "[[stage]]\nname = \"s\"\ncombine = \"highest_severity\"\nfiles = [\"r.toml\"]\n"),
        ("r.toml", STRINGY),
        ("lists/devs.txt", "dev-abc\ndev-xyz\n"),
        ("lists/nets.txt", "# type: cidr\n10.0.0.0/8\n"),
    ]);
    let custom = RuleSet::load(dir.path(), &schema).unwrap_or_else(|d| panic!("{}", d.render()));

    let app = MapSource::new(EventKind::LoanApplication)
        .set(&schema, "entity.ip", "10.66.1.2")
        .set(&schema, "entity.device_id", "dev-0000000000000bad")
        .set(&schema, "event.amount", "60000")
        .set(&schema, "device.distinct_users_24h", "5")
        .set(&schema, "device.applications_1h", "4")
        .set(&schema, "ip24.distinct_users_24h", "30")
        .set(&schema, "model.score", "500");
    let login = MapSource::new(EventKind::Login)
        .set(&schema, "entity.user_id", "u-001")
        .set(&schema, "entity.device_id", "DEV-ABC")
        .set(&schema, "entity.ip", "10.1.2.3")
        .set(&schema, "user.failed_logins_10m", "6")
        .set(&schema, "user.applications_30d", "2");

    let mut v = Verdict { hits: Vec::with_capacity(64), ..Verdict::default() };
    // Warm up, and check the rules really fire.
    starter.evaluate(&app, &mut v);
    assert!(v.hits.len() >= 5, "{:?}", v.hits);
    custom.evaluate(&login, &mut v);
    assert_eq!(v.hits.len(), 1, "{:?}", v.hits);

    // The counter sees this thread's allocations.
    let probe = allocations();
    std::hint::black_box(Vec::<u8>::with_capacity(16));
    assert_eq!(allocations(), probe + 1, "the allocation counter works");

    let before = allocations();
    for _ in 0..1000 {
        starter.evaluate(&app, &mut v);
        starter.evaluate(&login, &mut v);
        custom.evaluate(&login, &mut v);
        custom.evaluate(&app, &mut v);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "evaluation allocated {} times", after - before);
}
