//! The file driver: streams recorded events (JSONL, optionally gzip) through
//! the same [`Pipeline`] as the live driver, writing decisions and dead
//! letters as JSONL.
//!
//! **Order.** Inputs are decided in file order, which is arrival order: a
//! recorded topic partition replays in offset order, exactly as `riskd serve`
//! consumed it, so a replay reproduces the live decisions. Events that arrive
//! out of event-time order are handled by the feature engine's allowed
//! lateness, as they are live. (Whole-file event-time sorting is what
//! [`Recorded`] does for training and the demo; replay does not sort, so its
//! memory stays bounded however long the file is.)
//!
//! **Threads.** Stages joined by bounded channels of batches (so at most a
//! few thousand inputs are in flight): one thread reads the file, decodes
//! each line and runs it through the feature state (the pipeline's
//! [`Intake`], which must see every input in order); two [`Decider`]s (the
//! calling thread and one more) run the scorecard and rules and build the
//! decision records, taking batches alternately (they keep no state between
//! events); one thread encodes and writes the records, taking the batches
//! back alternately, which restores input order. The deciders carry about
//! two thirds of the work (reason codes above all), so this keeps two cores
//! busy.
//!
//! **Positions.** Every input carries its [`Position`] (line number and the
//! byte offset just past it). The feature state belongs to the intake
//! thread, which runs ahead of the output: a checkpoint is therefore taken
//! on the intake thread between two inputs and sent down the same channel
//! as the inputs, to be made durable by the output loop once everything
//! before it has been written.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::mpsc;

use riskd_core::timefmt::parse_rfc3339_ms;
use riskd_core::{DeadLetter, Event, SourcePosition};
use riskd_features::{EncodedState, FeatureVector};
use serde::Deserialize;

use crate::checkpoint::{CheckpointMeta, CheckpointStore, ReplayPoint};
use crate::pipeline::{Decider, Intake, Outcome, Pipeline};

/// Counts of what a replay produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub inputs: u64,
    pub decisions: u64,
    pub dead_letters: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_event_type: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// The last input whose output was written.
    pub position: Position,
}

impl Summary {
    pub fn record(&mut self, outcome: &Outcome) {
        self.inputs += 1;
        match outcome {
            Outcome::Decision(d) => {
                self.decisions += 1;
                *self.by_action.entry(d.action.as_str().into()).or_default() += 1;
                *self.by_event_type.entry(d.event_type.as_str().into()).or_default() += 1;
            }
            Outcome::DeadLetter(dl) => {
                self.dead_letters += 1;
                *self.by_reason.entry(dl.reason.as_str().into()).or_default() += 1;
            }
        }
    }

    /// A short human-readable report.
    pub fn render(&self) -> String {
        let rate = if self.elapsed.as_secs_f64() > 0.0 { self.inputs as f64 / self.elapsed.as_secs_f64() } else { 0.0 };
        let mut s = format!(
            "{} inputs: {} decisions, {} dead letters in {:.2}s ({:.0} events/s)\n",
            self.inputs,
            self.decisions,
            self.dead_letters,
            self.elapsed.as_secs_f64(),
            rate
        );
        let line = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        s += &format!("  actions:      {}\n", line(&self.by_action));
        s += &format!("  event types:  {}\n", line(&self.by_event_type));
        if !self.by_reason.is_empty() {
            s += &format!("  dead letters: {}\n", line(&self.by_reason));
        }
        s
    }
}

/// Opens a file, transparently gunzipping `*.gz`.
pub fn open_input(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let f = std::fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if path.extension().is_some_and(|x| x == "gz") {
        Ok(Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(f))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

#[derive(Deserialize)]
struct TimeOnly<'a> {
    #[serde(borrow, default)]
    event_time: Option<Cow<'a, str>>,
}

/// Lines of a recorded stream in event-time order. Lines whose time cannot
/// be read (they will be dead-lettered) keep their place after the line
/// before them. Ties keep file order.
pub struct Recorded {
    data: Vec<u8>,
    /// (sort key, line number, start, end)
    lines: Vec<(i64, u64, usize, usize)>,
}

impl Recorded {
    pub fn read(mut input: impl Read) -> io::Result<Recorded> {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        let mut lines = Vec::new();
        let mut key = i64::MIN;
        let mut start = 0;
        let mut line_no = 0;
        while start < data.len() {
            let end = memchr(&data[start..]).map_or(data.len(), |i| start + i);
            line_no += 1;
            let mut stop = end;
            if stop > start && data[stop - 1] == b'\r' {
                stop -= 1;
            }
            let line = &data[start..stop];
            if !line.iter().all(u8::is_ascii_whitespace) {
                if let Some(t) = serde_json::from_slice::<TimeOnly<'_>>(line)
                    .ok()
                    .and_then(|t| t.event_time)
                    .and_then(|t| parse_rfc3339_ms(&t))
                {
                    key = t;
                }
                lines.push((key, line_no, start, stop));
            }
            start = end + 1;
        }
        lines.sort_by_key(|&(k, n, _, _)| (k, n));
        Ok(Recorded { data, lines })
    }

    /// The same lines in file order: the order `replay` and `serve` decide in.
    pub fn into_file_order(mut self) -> Recorded {
        self.lines.sort_by_key(|&(_, n, _, _)| n);
        self
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// (line number, bytes) in event-time order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.lines.iter().map(|&(_, n, s, e)| (n, &self.data[s..e]))
    }
}

fn memchr(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

/// Where an input is in its file: 1-based line number, and the byte offset
/// just past the line (where reading resumes after it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub next_offset: u64,
}

/// Inputs per batch handed from the intake thread to the output loop.
const BATCH: usize = 256;
/// Batches the channel holds before the intake thread waits.
const QUEUE_BATCHES: usize = 16;
/// `progress` is called this often (in inputs).
const PROGRESS_EVERY: u64 = 1_000_000;

/// One input after the intake: an event (its feature values are in the
/// batch, `width` per event, in order), or its dead letter.
enum Admitted {
    Event { pos: Position, ev: Event, took: Duration },
    DeadLetter { pos: Position, dl: DeadLetter },
}

struct Batch {
    items: Vec<Admitted>,
    values: Vec<f64>,
    /// Feature state as of the end of this batch, to be made durable once
    /// the batch's outputs are written.
    checkpoint: Option<(Position, EncodedState)>,
}

impl Batch {
    fn new(width: usize) -> Batch {
        Batch { items: Vec::with_capacity(BATCH), values: Vec::with_capacity(BATCH * width), checkpoint: None }
    }
}

/// Checkpointing of a replay: the store, how often (in inputs), and the
/// input's name recorded in the checkpoint.
pub struct ReplayCheckpoints<'a> {
    pub store: &'a CheckpointStore,
    pub every: u64,
    pub input: String,
    pub feature_set: String,
}

/// Where a resumed replay starts: the checkpoint's input position, and the
/// output lengths its outputs were truncated to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Start {
    pub position: Position,
    pub decisions_bytes: u64,
    pub dead_letters_bytes: u64,
}

/// Reads `input` line by line through the intake, sending batches in order.
/// Stops early when the receiver is gone (the output loop failed).
fn intake_loop(
    intake: &mut Intake,
    mut input: Box<dyn BufRead + Send>,
    shown: &str,
    tx: [mpsc::SyncSender<Batch>; 2],
    start: Position,
    checkpoint_every: Option<u64>,
) -> io::Result<()> {
    let width = intake.feature_engine().feature_set().len();
    let mut fv = FeatureVector::default();
    let mut batch = Batch::new(width);
    let mut buf = Vec::with_capacity(4096);
    let mut pos = start;
    let mut sent = 0usize;
    let mut since_checkpoint = 0u64;
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        pos.line += 1;
        pos.next_offset += n as u64;
        let mut line = buf.as_slice();
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let start = Instant::now();
        let item = match intake.decode(line, || SourcePosition::File { path: shown.to_string(), line: pos.line }) {
            Ok(ev) => {
                intake.update_features(&ev, &mut fv);
                batch.values.extend_from_slice(&fv.0);
                Admitted::Event { pos, ev, took: start.elapsed() }
            }
            Err(dl) => Admitted::DeadLetter { pos, dl },
        };
        batch.items.push(item);
        since_checkpoint += 1;
        if checkpoint_every.is_some_and(|every| since_checkpoint >= every) {
            since_checkpoint = 0;
            batch.checkpoint = Some((pos, intake.encode_state()));
        }
        if batch.items.len() == BATCH || batch.checkpoint.is_some() {
            // Batches alternate between the two deciders.
            if tx[sent % 2].send(std::mem::replace(&mut batch, Batch::new(width))).is_err() {
                return Ok(());
            }
            sent += 1;
        }
    }
    if checkpoint_every.is_some() && since_checkpoint > 0 {
        batch.checkpoint = Some((pos, intake.encode_state()));
    }
    if !batch.items.is_empty() || batch.checkpoint.is_some() {
        let _ = tx[sent % 2].send(batch);
    }
    Ok(())
}

/// Replays `input` through `pipeline`, writing one JSON line per decision to
/// `decisions` and per dead letter to `dead_letters`, in input order.
/// `progress` is called every million inputs with the count so far.
pub fn replay(
    pipeline: &mut Pipeline,
    input: &Path,
    decisions: &mut (dyn Write + Send),
    dead_letters: &mut (dyn Write + Send),
    progress: impl FnMut(u64) + Send,
) -> io::Result<Summary> {
    replay_from(pipeline, input, decisions, dead_letters, progress, Start::default(), None)
}

/// [`replay`] from a position (the input is skipped up to it; the outputs
/// are assumed to hold everything before it), writing a checkpoint every
/// `checkpoints.every` inputs and at the end.
pub fn replay_from(
    pipeline: &mut Pipeline,
    input: &Path,
    decisions: &mut (dyn Write + Send),
    dead_letters: &mut (dyn Write + Send),
    progress: impl FnMut(u64) + Send,
    start: Start,
    checkpoints: Option<ReplayCheckpoints<'_>>,
) -> io::Result<Summary> {
    let started = Instant::now();
    let mut reader = open_input(input)?;
    if start.position.next_offset > 0 {
        let skipped = io::copy(&mut (&mut reader).take(start.position.next_offset), &mut io::sink())?;
        if skipped < start.position.next_offset {
            return Err(io::Error::other(format!(
                "{}: shorter ({skipped} bytes) than the checkpoint's position ({} bytes): not the input it was taken on",
                input.display(),
                start.position.next_offset
            )));
        }
    }
    let every = checkpoints.as_ref().map(|c| c.every.max(1));
    let shown = input.display().to_string();
    let (intake, decider) = pipeline.halves();
    let width = intake.feature_engine().feature_set().len();
    let mut second = decider.another().map_err(io::Error::other)?;
    let mut summary = std::thread::scope(|scope| {
        let (a_tx, a_rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
        let (b_tx, b_rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
        let (a_out_tx, a_out_rx) = mpsc::sync_channel::<Decided>(QUEUE_BATCHES);
        let (b_out_tx, b_out_rx) = mpsc::sync_channel::<Decided>(QUEUE_BATCHES);
        let shown = shown.as_str();
        let spawn = |name: &str| std::thread::Builder::new().name(format!("replay-{name}"));
        let reading = spawn("intake")
            .spawn_scoped(scope, move || intake_loop(intake, reader, shown, [a_tx, b_tx], start.position, every))?;
        let deciding = spawn("decide").spawn_scoped(scope, move || decide_loop(&mut second, width, b_rx, b_out_tx))?;
        let writing = spawn("output").spawn_scoped(scope, move || {
            output_loop([a_out_rx, b_out_rx], decisions, dead_letters, progress, start, checkpoints)
        })?;
        decide_loop(decider, width, a_rx, a_out_tx);
        // A failing stage drops its channel ends, which stops the others at their next send.
        let panicked = |what: &str| io::Error::other(format!("the replay {what} thread panicked"));
        deciding.join().map_err(|_| panicked("decide"))?;
        let written = writing.join().unwrap_or_else(|_| Err(panicked("output")));
        let read = reading.join().unwrap_or_else(|_| Err(panicked("intake")));
        read.and(written)
    })?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A batch of outcomes, in input order, and the checkpoint that follows it.
struct Decided {
    items: Vec<(Position, Outcome)>,
    checkpoint: Option<(Position, EncodedState)>,
}

/// Decides every admitted input of its batches, in order, handing the
/// outcomes to the output thread.
fn decide_loop(decider: &mut Decider, width: usize, rx: mpsc::Receiver<Batch>, tx: mpsc::SyncSender<Decided>) {
    let mut fv = FeatureVector::default();
    for batch in rx {
        let mut values = batch.values.chunks_exact(width.max(1));
        let mut out = Vec::with_capacity(batch.items.len());
        for item in batch.items {
            out.push(match item {
                Admitted::Event { pos, ev, took } => {
                    fv.0.clear();
                    if width > 0 {
                        fv.0.extend_from_slice(values.next().unwrap_or_default());
                    }
                    // `latency_us` counts the intake's time too, not the wait between threads.
                    let start = Instant::now().checked_sub(took).unwrap_or_else(Instant::now);
                    (pos, Outcome::Decision(decider.decide(&ev, &fv, start)))
                }
                Admitted::DeadLetter { pos, dl } => (pos, Outcome::DeadLetter(dl)),
            });
        }
        if tx.send(Decided { items: out, checkpoint: batch.checkpoint }).is_err() {
            return;
        }
    }
}

/// Encodes and writes every outcome, in order. `Summary::position` is the
/// last input whose output has been written.
fn output_loop(
    rx: [mpsc::Receiver<Decided>; 2],
    decisions: &mut (dyn Write + Send),
    dead_letters: &mut (dyn Write + Send),
    mut progress: impl FnMut(u64),
    start: Start,
    checkpoints: Option<ReplayCheckpoints<'_>>,
) -> io::Result<Summary> {
    let mut summary = Summary { position: start.position, ..Summary::default() };
    let (mut decisions_bytes, mut dead_letters_bytes) = (start.decisions_bytes, start.dead_letters_bytes);
    let mut line = Vec::with_capacity(4096);
    // Batches alternate between the deciders, so taking them alternately
    // restores input order; the input ends where the next one is missing.
    for n in 0.. {
        let Ok(batch) = rx[n % 2].recv() else { break };
        for (pos, outcome) in batch.items {
            line.clear();
            match &outcome {
                Outcome::Decision(d) => {
                    serde_json::to_writer(&mut line, d)?;
                    line.push(b'\n');
                    decisions.write_all(&line)?;
                    decisions_bytes += line.len() as u64;
                }
                Outcome::DeadLetter(dl) => {
                    serde_json::to_writer(&mut line, dl)?;
                    line.push(b'\n');
                    dead_letters.write_all(&line)?;
                    dead_letters_bytes += line.len() as u64;
                }
            }
            summary.record(&outcome);
            summary.position = pos;
            if summary.inputs.is_multiple_of(PROGRESS_EVERY) {
                progress(summary.inputs);
            }
        }
        if let (Some((pos, state)), Some(ck)) = (batch.checkpoint, &checkpoints) {
            // Everything before `pos` is written (and flushed) before the
            // checkpoint that says so.
            decisions.flush()?;
            dead_letters.flush()?;
            let meta = CheckpointMeta {
                feature_set: ck.feature_set.clone(),
                replay: Some(ReplayPoint {
                    input: ck.input.clone(),
                    line: pos.line,
                    input_offset: pos.next_offset,
                    decisions_bytes,
                    dead_letters_bytes,
                }),
                events: pos.line,
                written_at: crate::checkpoint::now_text(),
                ..CheckpointMeta::default()
            };
            ck.store.write_state(&meta, &state).map_err(io::Error::other)?;
        }
    }
    decisions.flush()?;
    dead_letters.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_lines_are_put_in_event_time_order() {
        let text = "{\"event_time\":\"2026-01-01T00:00:02Z\"}\n\nnot json\n{\"event_time\":\"2026-01-01T00:00:01Z\"}\r\n{\"event_time\":\"2026-01-01T00:00:02Z\",\"x\":1}";
        let r = Recorded::read(text.as_bytes()).unwrap();
        let order: Vec<u64> = r.iter().map(|(n, _)| n).collect();
        assert_eq!(order, vec![4, 1, 3, 5]);
        assert!(r.iter().all(|(_, b)| !b.ends_with(b"\r")));
    }

    #[test]
    fn gzip_input_reads_like_plain_input() {
        use std::io::Write;
        let text = "{\"event_time\":\"2026-01-01T00:00:02Z\"}\n{\"event_time\":\"2026-01-01T00:00:01Z\"}\n";
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("e.jsonl");
        let gz = dir.path().join("e.jsonl.gz");
        std::fs::write(&plain, text).unwrap();
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let a = Recorded::read(open_input(&plain).unwrap()).unwrap();
        let b = Recorded::read(open_input(&gz).unwrap()).unwrap();
        let lines = |r: &Recorded| r.iter().map(|(n, l)| (n, l.to_vec())).collect::<Vec<_>>();
        assert_eq!(lines(&a), lines(&b));
        assert_eq!(lines(&a)[0].0, 2);
        let missing = open_input(&dir.path().join("missing.jsonl")).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|m| m.contains("missing.jsonl")));
    }
}
