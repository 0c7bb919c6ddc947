//! Hot reload of the rule set while serving. The rules directory is polled
//! for changes (and SIGHUP forces a reload); a change is compiled and its
//! analyst tests run; only a rule set that passes both replaces the one in
//! force, atomically between two events. A refused change leaves the
//! previous rules serving and is reported in the log and in
//! `risk_reloads_total{what="rules",outcome="rejected"}`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use riskd_core::metric;
use riskd_core::version::ContentHasher;
use riskd_pipeline::deployment::{Deployment, ReloadOutcome};

/// A hash of every file under `dir` (names and contents), to notice edits.
pub fn fingerprint(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    let mut h = ContentHasher::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        h.part(&f.display().to_string(), &bytes);
    }
    h.finish()
}

/// Reloads once and reports the outcome.
pub fn reload_now(deployment: &Deployment, why: &str) {
    let outcome = match deployment.reload_rules() {
        Ok(ReloadOutcome::Applied { rule_set, lists }) => {
            tracing::info!(%rule_set, %lists, trigger = why, "new rule set in force");
            "applied"
        }
        Ok(ReloadOutcome::Unchanged) => {
            tracing::info!(trigger = why, "rule files changed but compile to the rule set in force");
            "unchanged"
        }
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "rule reload refused; the previous rule set keeps serving");
            "rejected"
        }
    };
    metrics::counter!(metric::RELOADS_TOTAL, "what" => "rules", "outcome" => outcome).increment(1);
}

/// Watches the rules directory every `interval` (None: only on SIGHUP)
/// until `shutdown` resolves.
pub async fn watch_rules(deployment: Arc<Deployment>, interval: Option<Duration>, shutdown: impl Future<Output = ()>) {
    let dir = deployment.rules_dir().to_path_buf();
    let mut seen = fingerprint(&dir);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; rules reload only on file changes");
            None
        }
    };
    tokio::pin!(shutdown);
    loop {
        let tick = async {
            match interval {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = hangup => {
                seen = fingerprint(&dir);
                reload_now(&deployment, "SIGHUP");
            }
            _ = tick => {
                let now = fingerprint(&dir);
                if now != seen {
                    seen = now;
                    reload_now(&deployment, "file change");
                }
            }
        }
    }
}
