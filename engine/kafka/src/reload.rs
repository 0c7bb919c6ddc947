//! Hot reload of the rule set and of the models while serving. The rules
//! directory and the model directories are polled for changes (SIGHUP
//! forces a reload of both; `POST /admin/reload` one of the rules).
//!
//! - A rules change is compiled and its analyst tests run.
//! - A models change is loaded and validated beside the models in force:
//!   manifest, model file, inputs against the feature set, the fast path
//!   prepared, champion/challenger pairs, the same event types scored.
//!
//! Only a change that passes replaces the version in force, atomically
//! between two events. A refused change leaves the previous version serving
//! and is reported in the log, in `risk_reloads_total{what,outcome}` and on
//! `/status` (`reload` for rules, `model_reload` for models).

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
    /// Why the last refused reload was refused (diagnostics, failing tests
    /// or model validation errors).
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<ReloadStatus>>;

/// Asks the watcher for a reload now (what SIGHUP does); the reply is the
/// reload status once it is done.
pub type ReloadRequests = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<ReloadStatus>>;
/// The watcher's end of [`ReloadRequests`].
pub type ReloadInbox = tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<ReloadStatus>>;

/// A request channel for [`watch`]; a few requests may wait.
pub fn reload_channel() -> (ReloadRequests, ReloadInbox) {
    tokio::sync::mpsc::channel(4)
}

/// Reload status of rules and of models, for `/status`.
#[derive(Clone, Debug, Default)]
pub struct Statuses {
    pub rules: SharedStatus,
    pub models: SharedStatus,
}

/// What a watcher reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Rules,
    Models,
}

impl Watched {
    fn as_str(self) -> &'static str {
        match self {
            Watched::Rules => "rules",
            Watched::Models => "models",
        }
    }

    fn fingerprint(self, deployment: &Deployment) -> String {
        match self {
            Watched::Rules => fingerprint(deployment.rules_dir()),
            Watched::Models => {
                let mut h = ContentHasher::new();
                for dir in deployment.model_dirs() {
                    h.part(&dir.display().to_string(), fingerprint(dir).as_bytes());
                }
                h.finish()
            }
        }
    }
}

/// Reloads rules once and reports the outcome (log, metric, status).
pub fn reload_now(deployment: &Deployment, why: &str, status: &SharedStatus) {
    reload(deployment, Watched::Rules, why, status)
}

/// Reloads rules or models once and reports the outcome (log, metric, status).
pub fn reload(deployment: &Deployment, what: Watched, why: &str, status: &SharedStatus) {
    let result = match what {
        Watched::Rules => deployment.reload_rules(),
        Watched::Models => deployment.reload_models(),
    };
    let (outcome, error) = match result {
        Ok(ReloadOutcome::Applied { rule_set, lists }) => {
            tracing::info!(%rule_set, %lists, trigger = why, "new rule set in force");
            ("applied", None)
        }
        Ok(ReloadOutcome::ModelsApplied { models, model }) => {
            let list = models.iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", ");
            tracing::info!(models = %list, %model, trigger = why, "new models in force");
            ("applied", None)
        }
        Ok(ReloadOutcome::Unchanged) => {
            tracing::info!(trigger = why, what = what.as_str(), "files changed but load to the version in force");
            ("unchanged", None)
        }
        Err(e) => {
            tracing::error!(trigger = why, what = what.as_str(), error = %e, "reload refused; the previous version keeps serving");
            ("rejected", Some(e.to_string()))
        }
    };
    metrics::counter!(metric::RELOADS_TOTAL, "what" => what.as_str(), "outcome" => outcome).increment(1);
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

/// The `/status` document: versions in force, rule count, models, reload history.
pub fn status_json(deployment: &Deployment, status: &Statuses) -> serde_json::Value {
    let state = deployment.rules();
    let reload = status.rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let model_reload = status.models.lock().unwrap_or_else(|p| p.into_inner()).clone();
    serde_json::json!({
        "versions": state.versions,
        "rules": state.rules.rule_count(),
        "features": deployment.features.len(),
        "models": state.models.models.iter().enumerate().map(|(i, m)| serde_json::json!({
            "name": m.manifest.name,
            "version": m.version,
            "manifest_version": m.manifest.version,
            "role": state.models.role(i).as_str(),
        })).collect::<Vec<_>>(),
        "reload": reload,
        "model_reload": model_reload,
    })
}

/// Watches the rules directory every `interval` (None: only on SIGHUP)
/// until `shutdown` resolves.
pub async fn watch_rules(
    deployment: Arc<Deployment>,
    interval: Option<Duration>,
    status: SharedStatus,
    requests: ReloadInbox,
    shutdown: impl Future<Output = ()>,
) {
    watch(deployment, Watched::Rules, interval, status, Some(requests), shutdown).await
}

/// Watches the rules directory or the model directories every `interval`
/// (None: only on SIGHUP) until `shutdown` resolves.
pub async fn watch(
    deployment: Arc<Deployment>,
    what: Watched,
    interval: Option<Duration>,
    status: SharedStatus,
    mut requests: Option<ReloadInbox>,
    shutdown: impl Future<Output = ()>,
) {
    let mut seen = what.fingerprint(&deployment);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, what = what.as_str(), "cannot listen for SIGHUP; reloads only on file changes");
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
                seen = what.fingerprint(&deployment);
                reload(&deployment, what, "SIGHUP", &status);
            }
            Some(reply) = async {
                match &mut requests {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                seen = what.fingerprint(&deployment);
                reload(&deployment, what, "admin endpoint", &status);
                let now = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // The requester may have given up waiting; nothing to do then.
                let _ = reply.send(now);
            }
            _ = tick => {
                let now = what.fingerprint(&deployment);
                if now != seen {
                    seen = now;
                    reload(&deployment, what, "file change", &status);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskd_pipeline::config::EngineConfig;

    async fn wait_for(status: &SharedStatus, done: impl Fn(&ReloadStatus) -> bool) -> ReloadStatus {
        for _ in 0..500 {
            let s = status.lock().unwrap().clone();
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no reload happened: {:?}", status.lock().unwrap());
    }

    #[tokio::test]
    async fn model_changes_are_polled_a_bad_one_is_reported_on_status_and_a_good_one_applied() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        for f in ["manifest.toml", "model.txt"] {
            std::fs::copy(repo.join("models/a_card").join(f), dir.path().join(f)).unwrap();
        }
        let cfg = EngineConfig {
            features_dir: repo.join("features"),
            rules_dir: repo.join("rules"),
            models: vec![dir.path().to_path_buf()],
            ..EngineConfig::default()
        };
        let dep = Arc::new(Deployment::load(&cfg).unwrap_or_else(|e| panic!("{e}")));
        let before = status_json(&dep, &Statuses::default());
        let statuses = Statuses::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(watch(
            dep.clone(),
            Watched::Models,
            Some(Duration::from_millis(20)),
            statuses.models.clone(),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        // Let the watcher take its first fingerprint of the files in force.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let manifest = dir.path().join("manifest.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();

        // A bad version: refused, the reason on /status, the old model in force.
        std::fs::write(&manifest, text.replace("pdo = 40", "pdo = inf")).unwrap();
        wait_for(&statuses.models, |s| s.rejected == 1).await;
        let s = status_json(&dep, &statuses);
        assert_eq!(s["model_reload"]["last_outcome"], "rejected", "{s}");
        assert_eq!(s["model_reload"]["last_trigger"], "file change", "{s}");
        let why = s["model_reload"]["last_error"].as_str().unwrap_or_default();
        assert!(
            why.contains(&format!("{}: invalid manifest: scaling needs base_odds > 0 and pdo > 0", manifest.display())),
            "{why}"
        );
        assert_eq!(s["models"], before["models"], "{s}");
        assert_eq!(s["versions"], before["versions"], "{s}");
        // Rules reloads are reported apart.
        assert_eq!(s["reload"]["rejected"], 0, "{s}");

        // A good version: applied, shown on /status.
        std::fs::write(&manifest, text.replace("version = \"2026.11.0\"", "version = \"2026.11.1\"")).unwrap();
        wait_for(&statuses.models, |s| s.applied == 1).await;
        let s = status_json(&dep, &statuses);
        assert_eq!(s["model_reload"]["last_outcome"], "applied", "{s}");
        assert!(s["model_reload"]["last_error"].is_null(), "{s}");
        assert_eq!(s["models"][0]["manifest_version"], "2026.11.1", "{s}");
        assert_eq!(s["models"][0]["role"], "champion", "{s}");
        assert_ne!(s["models"][0]["version"], before["models"][0]["version"], "{s}");
        assert_ne!(s["versions"]["model"], before["versions"]["model"], "{s}");
        assert_eq!(s["versions"]["rule_set"], before["versions"]["rule_set"], "{s}");

        stop.send(()).unwrap();
        watcher.await.unwrap();
    }
}
