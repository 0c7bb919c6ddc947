//! Hot reload of the rule set while serving. The rules directory is polled
//! for changes (and SIGHUP or `POST /admin/reload` forces a reload); a change is compiled and its
//! analyst tests run; only a rule set that passes both replaces the one in
//! force, atomically between two events. A refused change leaves the
//! previous rules serving and is reported in the log and in
//! `risk_reloads_total{what="rules",outcome="rejected"}`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// What the last reloads did, for `/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub applied: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// applied, unchanged or rejected
    pub last_outcome: Option<&'static str>,
    /// SIGHUP or file change
    pub last_trigger: Option<String>,
    /// Why the last refused reload was refused (diagnostics or failing tests).
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<ReloadStatus>>;

/// Asks the watcher for a reload now (what SIGHUP does); the reply is the
/// reload status once it is done.
pub type ReloadRequests = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<ReloadStatus>>;
/// The watcher's end of [`ReloadRequests`].
pub type ReloadInbox = tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<ReloadStatus>>;

/// A request channel for [`watch_rules`]; a few requests may wait.
pub fn reload_channel() -> (ReloadRequests, ReloadInbox) {
    tokio::sync::mpsc::channel(4)
}

/// Reloads once and reports the outcome (log, metric, status).
pub fn reload_now(deployment: &Deployment, why: &str, status: &SharedStatus) {
    let (outcome, error) = match deployment.reload_rules() {
        Ok(ReloadOutcome::Applied { rule_set, lists }) => {
            tracing::info!(%rule_set, %lists, trigger = why, "new rule set in force");
            ("applied", None)
        }
        Ok(ReloadOutcome::Unchanged) => {
            tracing::info!(trigger = why, "rule files changed but compile to the rule set in force");
            ("unchanged", None)
        }
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "rule reload refused; the previous rule set keeps serving");
            ("rejected", Some(e.to_string()))
        }
    };
    metrics::counter!(metric::RELOADS_TOTAL, "what" => "rules", "outcome" => outcome).increment(1);
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        "applied" => s.applied += 1,
        "unchanged" => s.unchanged += 1,
        _ => s.rejected += 1,
    }
    s.last_outcome = Some(outcome);
    s.last_trigger = Some(why.to_string());
    if error.is_some() || outcome == "applied" {
        s.last_error = error;
    }
}

/// The `/status` document: versions in force, rule count, reload history.
pub fn status_json(deployment: &Deployment, status: &SharedStatus) -> serde_json::Value {
    let state = deployment.rules();
    let reload = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    serde_json::json!({
        "versions": state.versions,
        "rules": state.rules.rule_count(),
        "features": deployment.features.len(),
        "models": deployment.models.iter().map(|m| &m.manifest.name).collect::<Vec<_>>(),
        "reload": reload,
    })
}

/// Watches the rules directory every `interval` (None: only on SIGHUP and
/// requests) until `shutdown` resolves. Reloads at once on SIGHUP and on
/// each request from `requests` (the admin endpoint), answering it.
pub async fn watch_rules(
    deployment: Arc<Deployment>,
    interval: Option<Duration>,
    status: SharedStatus,
    mut requests: ReloadInbox,
    shutdown: impl Future<Output = ()>,
) {
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
                reload_now(&deployment, "SIGHUP", &status);
            }
            Some(reply) = requests.recv() => {
                seen = fingerprint(&dir);
                reload_now(&deployment, "admin endpoint", &status);
                let now = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // The requester may have given up waiting; nothing to do then.
                let _ = reply.send(now);
            }
            _ = tick => {
                let now = fingerprint(&dir);
                if now != seen {
                    seen = now;
                    reload_now(&deployment, "file change", &status);
                }
            }
        }
    }
}
