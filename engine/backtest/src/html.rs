//! The self-contained HTML report: inline CSS and inline SVG charts, no
//! scripts and no external assets, so it can be mailed or archived as one
//! file. It shows the same numbers as the tables, from the same [`Report`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use crate::run::{BacktestError, SIDES};
use crate::stats::{Change, Report, SideReport};

const COLORS: [&str; 2] = ["#4c78a8", "#f58518"];

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}td.changed{background:#fde2c8;font-weight:600}\
.note{color:#666;font-size:.9em}.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}\
svg text{font:11px system-ui,sans-serif;fill:#333}code{background:#f4f4f4;padding:0 .2em}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.2}%", v * 100.0))
}

fn pp(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:+.2} pp", v * 100.0))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn legend(s: &mut String) {
    s.push_str("<p class=\"legend\">");
    for (i, name) in SIDES.iter().enumerate() {
        let _ = write!(s, "<span style=\"background:{}\"></span>{name}", COLORS[i]);
    }
    s.push_str("</p>");
}

/// Grouped vertical bars: one group per label, one bar per configuration.
fn bar_chart(s: &mut String, labels: &[String], values: &[[f64; 2]], as_percent: bool) {
    let (w, h, pad, bottom) = (1000.0, 220.0, 56.0, 40.0);
    let max = values.iter().flat_map(|v| v.iter().copied()).fold(0.0f64, f64::max).max(1e-9);
    let n = labels.len().max(1) as f64;
    let group = (w - pad) / n;
    let bar = (group * 0.8 / 2.0).min(40.0);
    let _ = write!(s, "<svg viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\">", h + bottom);
    let _ = write!(s, "<line x1=\"{pad}\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/>");
    let top = if as_percent { format!("{:.1}%", max * 100.0) } else { format!("{max:.0}") };
    let _ = write!(s, "<text x=\"{}\" y=\"12\" text-anchor=\"end\">{top}</text>", pad - 4.0);
    for (k, (label, v)) in labels.iter().zip(values).enumerate() {
        let x0 = pad + group * k as f64 + (group - 2.0 * bar) / 2.0;
        for (i, &val) in v.iter().enumerate() {
            let bh = (val / max) * (h - 15.0);
            let shown = if as_percent { format!("{:.2}%", val * 100.0) } else { format!("{val}") };
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {}</title></rect>",
                x0 + bar * i as f64,
                h - bh,
                bar,
                bh,
                COLORS[i],
                SIDES[i],
                esc(label),
                shown
            );
        }
        if labels.len() <= 40 || k % (labels.len() / 20).max(1) == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x0 + bar,
                h + 14.0,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
}

/// One line per configuration over the days.
fn line_chart(s: &mut String, days: &[String], series: [&[Option<f64>]; 2]) {
    let (w, h, pad, bottom) = (1000.0, 220.0, 56.0, 40.0);
    let max = series.iter().flat_map(|v| v.iter().flatten().copied()).fold(0.0f64, f64::max).max(1e-9);
    let n = days.len();
    let step = if n > 1 { (w - pad - 10.0) / (n - 1) as f64 } else { 0.0 };
    let _ = write!(s, "<svg viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\">", h + bottom);
    let _ = write!(s, "<line x1=\"{pad}\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/>");
    let _ = write!(s, "<text x=\"{}\" y=\"12\" text-anchor=\"end\">{:.1}%</text>", pad - 4.0, max * 100.0);
    for (i, values) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| format!("{:.1},{:.1}", pad + step * k as f64, h - v / max * (h - 15.0))))
            .collect();
        let dash = if i == 1 { " stroke-dasharray=\"6 3\"" } else { "" };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            COLORS[i],
            points.join(" ")
        );
    }
    let every = (n / 10).max(1);
    for (k, d) in days.iter().enumerate().filter(|(k, _)| k % every == 0) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            pad + step * k as f64,
            h + 14.0,
            esc(d.get(5..).unwrap_or(d))
        );
    }
    s.push_str("</svg>");
}

/// Renders the page.
pub fn render(r: &Report, sample: &[Change]) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Backtest of {}</title><style>{CSS}</style></head><body>",
        esc(&r.input)
    );
    let _ = write!(s, "<h1>Backtest of <code>{}</code></h1>", esc(&r.input));
    let l = &r.labels;
    let _ = write!(
        s,
        "<p>{} inputs, decided by both configurations in one pass{}. Labels: {} read; {} applications labelled, {} unlabelled (counted, not dropped); {} labels match no input.</p>",
        r.inputs,
        if r.shared_intake { " through one shared intake (same feature set)" } else { " through two intakes (the feature sets differ)" },
        l.labels_read,
        l.applications_labelled,
        l.applications_unlabelled,
        l.labels_without_input
    );
    s.push_str("<table><tr><th class=\"l\">versions</th><th class=\"l\">feature set</th><th class=\"l\">rule set</th><th class=\"l\">lists</th><th class=\"l\">model</th></tr>");
    for c in &r.configurations {
        let v = &c.versions;
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\"><code>{}</code></td><td class=\"l\"><code>{}</code></td><td class=\"l\"><code>{}</code></td></tr>",
            c.configuration,
            esc(&v.feature_set),
            esc(&v.rule_set),
            esc(&v.lists),
            esc(&v.model)
        );
    }
    s.push_str("</table>");

    // Summary.
    let d = &r.difference;
    let [b, c] = &r.configurations;
    s.push_str(
        "<h2>Summary</h2><table><tr><th class=\"l\"></th><th>baseline</th><th>candidate</th><th>change</th></tr>",
    );
    for (name, x, y, ch) in [
        ("approval rate (applications)", b.approval_rate, c.approval_rate, d.approval_rate_change),
        ("review rate (applications)", b.review_rate, c.review_rate, d.review_rate_change),
        ("reject rate (applications)", b.reject_rate, c.reject_rate, d.reject_rate_change),
        ("alert rate (other events)", b.alert_rate, c.alert_rate, d.alert_rate_change),
        ("bad rate of approved (labelled)", b.bad_rate_approved, c.bad_rate_approved, d.bad_rate_approved_change),
    ] {
        let _ =
            write!(s, "<tr><td class=\"l\">{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>", pct(x), pct(y), pp(ch));
    }
    let _ = write!(
        s,
        "<tr><td class=\"l\">changed decisions</td><td colspan=\"3\">{} ({} more severe, {} less severe; {} labelled, of them {} bad)</td></tr></table>",
        d.changed, d.more_severe, d.less_severe, d.changed_labelled, d.changed_bad
    );
    for (name, dl) in [("baseline", &b.dead_letters), ("candidate", &c.dead_letters)] {
        if !dl.is_empty() {
            let list: Vec<String> = dl.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(s, "<p class=\"note\">{name} dead letters: {}</p>", esc(&list.join(", ")));
        }
    }

    // Actions.
    s.push_str("<h2>Actions</h2>");
    legend(&mut s);
    let labels: Vec<String> = b.actions.iter().map(|a| a.action.to_string()).collect();
    let values: Vec<[f64; 2]> =
        b.actions.iter().zip(&c.actions).map(|(x, y)| [x.rate.unwrap_or(0.0), y.rate.unwrap_or(0.0)]).collect();
    bar_chart(&mut s, &labels, &values, true);
    s.push_str(
        "<p class=\"note\">Rates of approve/review/reject are of applications; of pass/alert, of the other events.</p>",
    );
    s.push_str("<table><tr><th class=\"l\">configuration</th><th class=\"l\">action</th><th>count</th><th>rate</th><th>labelled</th><th>bad</th><th>unlabelled</th><th>bad rate</th></tr>");
    for side in &r.configurations {
        for a in &side.actions {
            let _ = write!(
                s,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                side.configuration,
                a.action,
                a.count,
                pct(a.rate),
                a.labelled,
                a.bad,
                a.unlabelled,
                pct(a.bad_rate)
            );
        }
    }
    s.push_str("</table>");

    // Swap matrix.
    s.push_str("<h2>Swap-in / swap-out</h2><p>Rows: the baseline's action; columns: the candidate's. Each cell: count (bad / good / unlabelled).</p>");
    let mut base_actions = BTreeSet::new();
    let mut cand_actions = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for sw in &d.swap {
        base_actions.insert(sw.baseline);
        cand_actions.insert(sw.candidate);
        cells.insert((sw.baseline, sw.candidate), sw);
    }
    s.push_str("<table><tr><th class=\"l\">baseline \\ candidate</th>");
    for a in &cand_actions {
        let _ = write!(s, "<th>{a}</th>");
    }
    s.push_str("</tr>");
    for x in &base_actions {
        let _ = write!(s, "<tr><th class=\"l\">{x}</th>");
        for y in &cand_actions {
            match cells.get(&(*x, *y)) {
                Some(sw) => {
                    let class = if x != y { " class=\"changed\"" } else { "" };
                    let _ = write!(
                        s,
                        "<td{class}>{} ({} / {} / {})</td>",
                        sw.count,
                        sw.bad,
                        sw.labelled - sw.bad,
                        sw.unlabelled
                    );
                }
                None => s.push_str("<td>0</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s.push_str("<h3>Rules behind the changes</h3><p class=\"note\">Active rules that fired in one configuration and not the other, over the changed decisions.</p>");
    s.push_str("<table><tr><th class=\"l\">rule</th><th class=\"l\">fired only in</th><th>changed</th><th>labelled</th><th>bad</th></tr>");
    for t in &d.top_rules {
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.rule_id),
            t.fired_only_in,
            t.changed,
            t.labelled,
            t.bad
        );
    }
    s.push_str("</table>");

    // Daily.
    let days: Vec<String> = r.daily.iter().filter(|d| d.configuration == SIDES[0]).map(|d| d.day.clone()).collect();
    let series = |i: usize, f: fn(&crate::stats::DayRow) -> Option<f64>| -> Vec<Option<f64>> {
        r.daily.iter().filter(|d| d.configuration == SIDES[i]).map(f).collect()
    };
    s.push_str("<h2>By day</h2>");
    for (title, f) in [
        ("Approval rate of applications", (|d: &crate::stats::DayRow| d.approval_rate) as fn(&_) -> _),
        ("Reject rate of applications", |d: &crate::stats::DayRow| d.reject_rate),
        ("Bad rate of approved applications (labelled)", |d: &crate::stats::DayRow| d.bad_rate_approved),
    ] {
        let _ = write!(s, "<h3>{title}</h3>");
        legend(&mut s);
        let (x, y) = (series(0, f), series(1, f));
        line_chart(&mut s, &days, [&x, &y]);
    }
    s.push_str("<table><tr><th class=\"l\">day</th><th>applications</th><th>approval b</th><th>approval c</th><th>reject b</th><th>reject c</th><th>bad rate approved b</th><th>bad rate approved c</th><th>changed</th></tr>");
    let rows: Vec<_> = r.daily.chunks(2).collect();
    for pair in rows {
        if let [x, y] = pair {
            let _ = write!(
                s,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.day),
                x.applications,
                pct(x.approval_rate),
                pct(y.approval_rate),
                pct(x.reject_rate),
                pct(y.reject_rate),
                pct(x.bad_rate_approved),
                pct(y.bad_rate_approved),
                x.changed
            );
        }
    }
    s.push_str("</table>");

    // Scores and models.
    s.push_str("<h2>Scores</h2>");
    legend(&mut s);
    let lows: BTreeSet<i64> = b.scores.iter().chain(&c.scores).map(|x| x.low).collect();
    let count = |side: &SideReport, low: i64| side.scores.iter().find(|x| x.low == low).map_or(0, |x| x.count) as f64;
    let labels: Vec<String> = lows.iter().map(|l| l.to_string()).collect();
    let values: Vec<[f64; 2]> = lows.iter().map(|&l| [count(b, l), count(c, l)]).collect();
    bar_chart(&mut s, &labels, &values, false);
    let _ = write!(
        s,
        "<p class=\"note\">Scored events per {}-point band (label: the band's lower edge). Bad rates per band are in <code>scores.csv</code>.</p>",
        crate::stats::SCORE_BUCKET
    );
    s.push_str("<table><tr><th class=\"l\">configuration</th><th class=\"l\">model</th><th>labelled</th><th>bad</th><th>AUC</th><th>KS</th><th>Gini</th></tr>");
    for side in &r.configurations {
        for m in &side.models {
            let _ = write!(
                s,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                side.configuration,
                esc(&m.model),
                m.labelled,
                m.bad,
                num(m.auc, 4),
                num(m.ks, 4),
                num(m.gini, 4)
            );
        }
    }
    s.push_str("</table>");

    // Rules.
    s.push_str("<h2>Rules</h2><p class=\"note\">Hit rate: of all decided events. Precision: bad share of the labelled events a rule hit. Lift: precision over the bad share of all labelled events.</p>");
    s.push_str("<table><tr><th class=\"l\">rule</th><th class=\"l\">stage</th><th class=\"l\">mode (b / c)</th><th>hits b</th><th>hits c</th><th>hit rate b</th><th>hit rate c</th><th>precision b</th><th>precision c</th><th>lift b</th><th>lift c</th></tr>");
    let ids: BTreeSet<&str> = b.rules.iter().chain(&c.rules).map(|x| x.rule_id.as_str()).collect();
    for id in ids {
        let (x, y) = (b.rules.iter().find(|r| r.rule_id == id), c.rules.iter().find(|r| r.rule_id == id));
        let stage = x.or(y).map_or("", |r| r.stage.as_str());
        let mode = |r: Option<&crate::stats::RuleRow>| r.map_or("absent", |r| r.mode);
        let class = if x.map(|r| (r.hits, r.mode)) != y.map(|r| (r.hits, r.mode)) { " class=\"changed\"" } else { "" };
        let _ = write!(
            s,
            "<tr><td class=\"l\"{class}>{}</td><td class=\"l\">{}</td><td class=\"l\">{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(id),
            esc(stage),
            mode(x),
            mode(y),
            x.map_or("–".into(), |r| r.hits.to_string()),
            y.map_or("–".into(), |r| r.hits.to_string()),
            pct(x.and_then(|r| r.hit_rate)),
            pct(y.and_then(|r| r.hit_rate)),
            pct(x.and_then(|r| r.precision)),
            pct(y.and_then(|r| r.precision)),
            num(x.and_then(|r| r.lift), 2),
            num(y.and_then(|r| r.lift), 2)
        );
    }
    s.push_str("</table>");
    for side in &r.configurations {
        let fired: Vec<&str> = side.rules.iter().filter(|r| r.hits > 0).map(|r| r.rule_id.as_str()).collect();
        let _ = write!(s, "<h3>Rule overlap, {}</h3><p class=\"note\">Events both rules hit (diagonal: the rule's own hits); rules that never fired are left out.</p>", side.configuration);
        let both: BTreeMap<(&str, &str), u64> =
            side.overlap.iter().map(|o| ((o.rule_a.as_str(), o.rule_b.as_str()), o.both)).collect();
        let max = side.overlap.iter().map(|o| o.both).max().unwrap_or(1).max(1) as f64;
        s.push_str("<table><tr><th></th>");
        for id in &fired {
            let _ = write!(s, "<th>{}</th>", esc(id));
        }
        s.push_str("</tr>");
        for a in &fired {
            let _ = write!(s, "<tr><th class=\"l\">{}</th>", esc(a));
            for bb in &fired {
                let key = if a <= bb { (*a, *bb) } else { (*bb, *a) };
                match both.get(&key) {
                    Some(&n) => {
                        let alpha = 0.12 + 0.6 * (n as f64 / max).sqrt();
                        let _ = write!(s, "<td style=\"background:rgba(76,120,168,{alpha:.2})\">{n}</td>");
                    }
                    None => s.push_str("<td></td>"),
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
    }

    // Changed decisions.
    let _ = write!(
        s,
        "<h2>Changed decisions</h2><p class=\"note\">{} of {} shown; all are in <code>changed.csv</code>.</p>",
        sample.len(),
        d.changed
    );
    s.push_str("<table><tr><th>line</th><th class=\"l\">event</th><th class=\"l\">type</th><th class=\"l\">time</th><th class=\"l\">baseline</th><th class=\"l\">candidate</th><th>score b</th><th>score c</th><th class=\"l\">label</th><th class=\"l\">rules only in b</th><th class=\"l\">rules only in c</th></tr>");
    for ch in sample {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            ch.line,
            esc(&ch.event_id),
            esc(&ch.event_type),
            esc(&ch.event_time),
            ch.baseline_action,
            ch.candidate_action,
            num(ch.baseline_score, 1),
            num(ch.candidate_score, 1),
            ch.label,
            esc(&ch.rules_only_in_baseline.join(" ")),
            esc(&ch.rules_only_in_candidate.join(" "))
        );
    }
    s.push_str("</table></body></html>\n");
    s
}

/// Writes the page to `path`.
pub fn write(path: &Path, report: &Report, sample: &[Change]) -> Result<(), BacktestError> {
    std::fs::write(path, render(report, sample))
        .map_err(|source| BacktestError::Output { path: path.display().to_string(), source })
}
