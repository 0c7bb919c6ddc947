//! `riskd-gen`: a seeded synthetic lending workload.
//!
//! It produces a contract-v1 event stream (JSONL, see `docs/events.md`) for
//! a population of synthetic borrowers, plus a labels CSV for every loan
//! application, for demos, tests, backtests and benchmarks. The same
//! arguments always give byte-identical output.
//!
//! Data flow:
//! 1. **Plan** (module `plan`): users get identities, devices and
//!    addresses; a fraud cast is picked (device farm, emulator/rooted
//!    devices, credential-stuffing victims, multi-lenders, an IP ring, contact
//!    switchers); every meaningful event of every user is planned, and every
//!    application's label is drawn from a logistic function of its risk factors.
//! 2. **Stream** ([`Generator`]): per-user timelines (planned events plus
//!    lazily drawn routine logins and device reports) are merged through a heap
//!    into one event-time-ordered stream, rendered straight into a reused text
//!    buffer; `--bad` malformed lines are slotted in at even intervals.
//! 3. **Write** ([`run`], [`write_stream`]): lines go to a file, a gzip file or
//!    stdout; labels to a CSV.
//!
//! Benchmarks and loaders stream without holding events in memory (memory
//! grows with the number of users, not of events; 5 million events take a few
//! seconds in release mode):
//!
//! ```
//! use riskd_gen::{GenConfig, Generator, LineKind};
//!
//! let cfg = GenConfig { users: 1_000, events: 20_000, ..GenConfig::default() };
//! let mut gen = Generator::new(&cfg)?;
//! let mut line = String::new();
//! let mut bytes = 0;
//! while let Some(meta) = gen.next_into(&mut line) {
//!     assert!(matches!(meta.kind, LineKind::Event(_)));
//!     bytes += line.len(); // e.g. produce `line.as_bytes()` to Kafka here
//!     line.clear();
//! }
//! assert_eq!(gen.stats().events, 20_000);
//! # assert!(bytes > 0);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! What the sample contains and how each fraud pattern looks is described in
//! `replay-data/README.md`; the ground truth of each run is in
//! [`GenStats::fraud`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flate2::write::GzEncoder;
use flate2::Compression;

mod clock;
mod malformed;
mod model;
mod plan;
mod render;
mod rng;
mod stream;
mod text;

pub use model::{
    event_id, BadReason, ContactSwitch, DeviceFarm, EventType, FraudManifest, GenStats, IpRing, LineKind, LineMeta,
    MultiLender, StuffingBurst, TaintedDevice,
};
pub use stream::{type_counts, GenLine, Generator};

/// Default start of the generated window.
pub const DEFAULT_START: &str = "2026-10-01T00:00:00Z";

/// Command-line options of `riskd gen`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// Seed; the same arguments always give byte-identical output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 400)]
    pub users: u32,
    /// Length of the window in days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Target number of valid events (met exactly unless the users' planned
    /// activity alone exceeds it).
    #[arg(long, default_value_t = 5000)]
    pub events: u64,
    /// Start of the window (RFC 3339).
    #[arg(long, default_value = DEFAULT_START)]
    pub start: String,
    /// Number of deliberately malformed lines to add (cycling through the
    /// dead-letter reasons).
    #[arg(long, default_value_t = 0)]
    pub bad: u64,
    /// Output path for the events; `-` is stdout, a `.gz` suffix gzips.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Optional output path for the labels CSV (`event_id,bad`).
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

impl GenArgs {
    /// The workload these options describe.
    pub fn config(&self) -> anyhow::Result<GenConfig> {
        let start_ms = clock::parse_rfc3339_ms(&self.start).context("--start")?;
        let cfg = GenConfig {
            seed: self.seed,
            users: self.users,
            days: self.days,
            events: self.events,
            start_ms,
            bad: self.bad,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The workload, independent of where it is written (for benchmarks and
/// tests that drive a [`Generator`] directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    pub seed: u64,
    pub users: u32,
    pub days: u32,
    pub events: u64,
    /// Start of the window, milliseconds since the Unix epoch.
    pub start_ms: i64,
    pub bad: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            users: 400,
            days: 30,
            events: 5000,
            // 2026-10-01T00:00:00Z
            start_ms: 1_790_812_800_000,
            bad: 0,
        }
    }
}

impl GenConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if self.users > 100_000_000 {
            bail!("--users must be at most 100000000");
        }
        if !(1..=36_600).contains(&self.days) {
            bail!("--days must be between 1 and 36600");
        }
        // Keep four-digit years in every timestamp.
        let lo = clock::parse_rfc3339_ms("1971-01-01T00:00:00Z")?;
        let hi = clock::parse_rfc3339_ms("9000-01-01T00:00:00Z")?;
        if !(lo..hi).contains(&self.start_ms) {
            bail!("--start must be between 1971 and 9000");
        }
        Ok(())
    }
}

/// Generates the workload and writes it: events as JSONL (one line each,
/// `\n`-terminated) and, if given, labels as CSV with an `event_id,bad`
/// header. Returns what was written.
pub fn write_stream(
    cfg: &GenConfig,
    events: &mut dyn Write,
    mut labels: Option<&mut dyn Write>,
) -> anyhow::Result<GenStats> {
    let mut gen = Generator::new(cfg)?;
    if let Some(l) = labels.as_deref_mut() {
        l.write_all(b"event_id,bad\n")?;
    }
    let mut buf = String::with_capacity(1024);
    let mut label_line = String::with_capacity(32);
    while let Some(meta) = gen.next_into(&mut buf) {
        buf.push('\n');
        events.write_all(buf.as_bytes())?;
        buf.clear();
        if let (Some(l), Some(bad), Some(seq)) = (labels.as_deref_mut(), meta.bad, meta.event_seq) {
            label_line.clear();
            label_line.push_str("ev-");
            text::push_padded(&mut label_line, seq, 9);
            label_line.push_str(if bad { ",1\n" } else { ",0\n" });
            l.write_all(label_line.as_bytes())?;
        }
    }
    events.flush()?;
    if let Some(l) = labels {
        l.flush()?;
    }
    Ok(gen.stats())
}

/// Runs `riskd gen`: writes the events to `--out` and the labels to
/// `--labels`.
pub fn run(args: &GenArgs) -> anyhow::Result<GenStats> {
    let cfg = args.config()?;
    let mut out = Sink::create(&args.out)?;
    let mut labels = args.labels.as_deref().map(Sink::create).transpose()?;
    let stats = write_stream(&cfg, &mut out, labels.as_mut().map(|l| l as &mut dyn Write))
        .with_context(|| format!("writing {}", args.out.display()))?;
    out.finish().with_context(|| format!("writing {}", args.out.display()))?;
    if let (Some(l), Some(path)) = (labels, &args.labels) {
        l.finish().with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(stats)
}

/// An output: stdout, a plain file or a gzip file (by `.gz` suffix).
enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
    // Level 1: gzip at default level would dominate the run time of a
    // multi-million-event benchmark file for a few percent of size.
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Sink {
    fn create(path: &Path) -> anyhow::Result<Sink> {
        if path.as_os_str() == "-" {
            return Ok(Sink::Stdout(BufWriter::with_capacity(1 << 20, io::stdout())));
        }
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let w = BufWriter::with_capacity(1 << 20, file);
        if path.extension().is_some_and(|e| e == "gz") {
            Ok(Sink::Gzip(GzEncoder::new(w, Compression::fast())))
        } else {
            Ok(Sink::File(w))
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush(),
            Sink::File(mut w) => w.flush(),
            Sink::Gzip(g) => g.finish()?.flush(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(buf),
            Sink::File(w) => w.write_all(buf),
            Sink::Gzip(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gen: GenArgs,
    }

    #[test]
    fn cli_defaults_are_the_default_config() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["gen"]).unwrap();
        assert_eq!(cli.gen.config().unwrap(), GenConfig::default());
        assert_eq!(cli.gen.out, PathBuf::from("-"));
        assert_eq!(cli.gen.labels, None);
    }

    #[test]
    fn cli_parses_every_option() {
        let cli = Cli::try_parse_from([
            "gen",
            "--seed",
            "7",
            "--users",
            "10",
            "--days",
            "2",
            "--events",
            "99",
            "--start",
            "2026-11-01T08:00:00+02:00",
            "--bad",
            "3",
            "--out",
            "x.jsonl.gz",
            "--labels",
            "l.csv",
        ])
        .unwrap();
        let cfg = cli.gen.config().unwrap();
        assert_eq!((cfg.seed, cfg.users, cfg.days, cfg.events, cfg.bad), (7, 10, 2, 99, 3));
        assert_eq!(cfg.start_ms, clock::parse_rfc3339_ms("2026-11-01T06:00:00Z").unwrap());
        assert_eq!(cli.gen.labels, Some(PathBuf::from("l.csv")));
        let bad = Cli::try_parse_from(["gen", "--start", "yesterday"]).unwrap();
        assert!(bad.gen.config().is_err());
    }
}
