//! The ops HTTP surface over a real socket with the real rules watcher:
//! admin endpoints need the bearer token, open endpoints do not, and
//! `POST /admin/reload` performs the reload SIGHUP performs.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use riskd_kafka::ops::{serve_http, Admin, AdminToken, StatusFn};
use riskd_kafka::reload::{reload_channel, status_json, watch_rules, Statuses};
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::Deployment;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A private copy of `rules/` (with lists and analyst tests).
fn copy_rules(to: &Path) {
    for sub in ["", "lists", "tests"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join("rules").join(sub)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

/// (status code, headers and body) of one HTTP/1.1 request.
fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect ops port");
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text}"));
    (code, text)
}

fn body(response: &str) -> serde_json::Value {
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response}"))
}

struct Ops {
    addr: SocketAddr,
    rules: PathBuf,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The ops server and the rules watcher wired as `riskd serve` wires them.
async fn start(token: Option<&str>) -> Ops {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_rules(&rules);
    let root = repo();
    let cfg = EngineConfig {
        features_dir: root.join("features"),
        rules_dir: rules.clone(),
        models: vec![root.join("models/a_card")],
        ..EngineConfig::default()
    };
    let dep = Arc::new(Deployment::load(&cfg).unwrap_or_else(|e| panic!("{e}")));
    let status = Statuses::default();
    let (requests, inbox) = reload_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(async move {
        let _ = stopped.await;
    });
    let (d, st) = (dep.clone(), status.clone());
    let status_fn: StatusFn = Arc::new(move || status_json(&d, &st));
    let admin = Admin { token: token.map(|t| AdminToken::new(t, "test").unwrap()), reload: Some(requests) };
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let addr = serve_http(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        Arc::new(AtomicBool::new(true)),
        status_fn,
        admin,
        stopped.clone(),
    )
    .await
    .unwrap();
    // No polling: only requests (and SIGHUP) reload, so each outcome here
    // is the endpoint's.
    tokio::spawn(watch_rules(dep, None, status.rules, inbox, stopped));
    Ops { addr, rules, _dir: dir, _stop: stop }
}

/// Runs blocking socket calls off the runtime's threads.
async fn call(addr: SocketAddr, method: &'static str, path: &'static str, auth: Option<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || request(addr, method, path, auth.as_deref())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_token_and_open_ones_do_not() {
    let token = AdminToken::generate();
    let ops = start(Some(&token)).await;
    let a = ops.addr;
    let right = Some(format!("Bearer {token}"));
    let wrong = Some(format!("Bearer {}", AdminToken::generate()));
    for (method, path) in [("GET", "/status"), ("POST", "/admin/reload")] {
        let (code, text) = call(a, method, path, None).await;
        assert_eq!(code, 401, "{method} {path} without a token: {text}");
        assert!(text.to_ascii_lowercase().contains("www-authenticate: bearer"), "{text}");
        assert_eq!(call(a, method, path, wrong.clone()).await.0, 401, "{method} {path} with a wrong token");
        let basic = Some(format!("Basic {token}"));
        assert_eq!(call(a, method, path, basic).await.0, 401, "{method} {path} with the token as Basic");
        let (code, text) = call(a, method, path, right.clone()).await;
        assert_eq!(code, 200, "{method} {path} with the token: {text}");
    }
    let (_, status) = call(a, "GET", "/status", right.clone()).await;
    assert!(body(&status)["versions"]["rule_set"].as_str().is_some_and(|v| v.starts_with("sha256:")), "{status}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(call(a, "GET", path, None).await.0, 200, "{path} stays open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_admin_endpoints_are_off() {
    let ops = start(None).await;
    let any = Some(format!("Bearer {}", AdminToken::generate()));
    for (method, path) in [("GET", "/status"), ("POST", "/admin/reload")] {
        let (code, text) = call(ops.addr, method, path, any.clone()).await;
        assert_eq!(code, 403, "{text}");
        assert!(text.contains("no admin token is configured"), "{text}");
    }
    assert_eq!(call(ops.addr, "GET", "/healthz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_endpoint_applies_a_good_change_and_refuses_a_bad_one() {
    let token = AdminToken::generate();
    let ops = start(Some(&token)).await;
    let auth = Some(format!("Bearer {token}"));
    let (_, before) = call(ops.addr, "GET", "/status", auth.clone()).await;
    let before = body(&before)["versions"]["rule_set"].as_str().unwrap().to_string();

    // Nothing changed yet: the reload runs and finds the same rule set.
    let (code, text) = call(ops.addr, "POST", "/admin/reload", auth.clone()).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(body(&text)["last_outcome"], "unchanged", "{text}");

    // The review cap raised to 25%: it compiles, and the analyst cases
    // still pass (none has an APR between 24% and 25%).
    let chain = ops.rules.join("chain.toml");
    let text = std::fs::read_to_string(&chain).unwrap();
    std::fs::write(&chain, text.replace("apr_review_cap = 0.24", "apr_review_cap = 0.25")).unwrap();
    let (code, reply) = call(ops.addr, "POST", "/admin/reload", auth.clone()).await;
    assert_eq!(code, 200, "{reply}");
    let reply = body(&reply);
    assert_eq!(
        (reply["last_outcome"].as_str(), reply["last_trigger"].as_str()),
        (Some("applied"), Some("admin endpoint"))
    );
    assert_eq!(reply["applied"], 1);
    let (_, after) = call(ops.addr, "GET", "/status", auth.clone()).await;
    let after = body(&after);
    assert_ne!(after["versions"]["rule_set"].as_str().unwrap(), before, "the new rule set is in force");

    // A broken change is refused with its diagnostics; the rules in force stay.
    std::fs::write(&chain, text.replace("apr_review_cap = 0.24", "apr_review_cap = [0.24]")).unwrap();
    let (code, reply) = call(ops.addr, "POST", "/admin/reload", auth.clone()).await;
    assert_eq!(code, 422, "{reply}");
    let reply = body(&reply);
    assert_eq!(reply["last_outcome"], "rejected");
    assert!(reply["last_error"].as_str().is_some_and(|e| e.contains("E-FIELD-TYPE")), "{reply}");
    let (_, still) = call(ops.addr, "GET", "/status", auth).await;
    assert_eq!(body(&still)["versions"], after["versions"]);
}
