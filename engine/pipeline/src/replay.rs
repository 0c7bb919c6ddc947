//! The file driver: reads recorded events (JSONL, optionally gzip), puts
//! them in event-time order and runs them through the same [`Pipeline`] as
//! the live driver, writing decisions and dead letters as JSONL.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use riskd_core::timefmt::parse_rfc3339_ms;
use riskd_core::SourcePosition;
use serde::Deserialize;

use crate::pipeline::{Outcome, Pipeline};

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

/// Replays `input` through `pipeline`, writing one JSON line per decision to
/// `decisions` and per dead letter to `dead_letters`. `progress` is called
/// every 50,000 inputs with (done, total).
pub fn replay(
    pipeline: &mut Pipeline,
    input: &Path,
    decisions: &mut dyn Write,
    dead_letters: &mut dyn Write,
    mut progress: impl FnMut(u64, u64),
) -> io::Result<Summary> {
    let started = Instant::now();
    let recorded = Recorded::read(open_input(input)?)?;
    let shown = input.display().to_string();
    let total = recorded.len() as u64;
    let mut summary = Summary::default();
    for (line, bytes) in recorded.iter() {
        let outcome = pipeline.process(bytes, || SourcePosition::File { path: shown.clone(), line });
        match &outcome {
            Outcome::Decision(d) => {
                serde_json::to_writer(&mut *decisions, d)?;
                decisions.write_all(b"\n")?;
            }
            Outcome::DeadLetter(dl) => {
                serde_json::to_writer(&mut *dead_letters, dl)?;
                dead_letters.write_all(b"\n")?;
            }
        }
        summary.record(&outcome);
        if summary.inputs % 50_000 == 0 {
            progress(summary.inputs, total);
        }
    }
    decisions.flush()?;
    dead_letters.flush()?;
    progress(summary.inputs, total);
    summary.elapsed = started.elapsed();
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
