//! Same arguments, same bytes; the streaming, iterator and file paths agree.

mod common;

use std::io::Read;

use common::*;
use riskd_gen::{run, write_stream, GenArgs, GenConfig, Generator};

fn args(dir: &std::path::Path, name: &str, seed: u64) -> GenArgs {
    GenArgs {
        seed,
        users: 150,
        days: 20,
        events: 3000,
        start: "2026-10-01T00:00:00Z".into(),
        bad: 8,
        out: dir.join(format!("{name}.jsonl")),
        labels: Some(dir.join(format!("{name}.csv"))),
    }
}

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path(), "a", 7);
    let b = args(dir.path(), "b", 7);
    let c = args(dir.path(), "c", 8);
    let sa = run(&a).unwrap();
    let sb = run(&b).unwrap();
    run(&c).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(read(&a.out), read(&b.out));
    assert_eq!(read(a.labels.as_ref().unwrap()), read(b.labels.as_ref().unwrap()));
    assert_ne!(read(&a.out), read(&c.out));
    assert_ne!(read(a.labels.as_ref().unwrap()), read(c.labels.as_ref().unwrap()));
    assert_eq!(sa.events, 3000);
}

#[test]
fn gzip_output_holds_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = args(dir.path(), "plain", 3);
    let mut gz = args(dir.path(), "gz", 3);
    gz.out = dir.path().join("gz.jsonl.gz");
    run(&plain).unwrap();
    run(&gz).unwrap();
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz.out).unwrap()).read_to_end(&mut text).unwrap();
    assert_eq!(text, read(&plain.out));
}

#[test]
fn every_api_gives_the_same_stream() {
    let cfg = GenConfig { seed: 11, users: 100, events: 2000, bad: 5, ..GenConfig::default() };
    let mut written = Vec::new();
    write_stream(&cfg, &mut written, None).unwrap();

    let mut g = Generator::new(&cfg).unwrap();
    assert_eq!(g.total_lines(), 2005);
    let mut buf = String::new();
    let mut streamed = String::new();
    while g.next_into(&mut buf).is_some() {
        streamed.push_str(&buf);
        streamed.push('\n');
        buf.clear();
    }
    let (lines, _) = generate(&cfg);
    let iterated: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    assert_eq!(streamed.as_bytes(), &written[..]);
    assert_eq!(iterated, streamed);
}

/// `replay-data/` is what `riskd gen --seed 42 --users 400 --days 30
/// --events 5000 --bad 8` produces. When a generator change breaks this,
/// regenerate the sample (command in replay-data/README.md) and update the
/// README's ids and the examples in docs/events.md.
#[test]
fn committed_sample_is_reproducible() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../replay-data");
    let cfg = GenConfig { bad: 8, ..GenConfig::default() };
    let (mut events, mut labels) = (Vec::new(), Vec::new());
    let stats = write_stream(&cfg, &mut events, Some(&mut labels)).unwrap();
    let committed = read(&std::path::Path::new(dir).join("events.jsonl"));
    assert!(committed == events, "replay-data/events.jsonl differs from the generator's output: regenerate it");
    assert_eq!(read(&std::path::Path::new(dir).join("labels.csv")), labels);
    assert_eq!((stats.events, stats.malformed, stats.applications), (5000, 8, 270));
}
