//! The HTTP operations surface, bound to loopback by default.
//!
//! Open to anyone who can reach the port, and free of personal data:
//! `/metrics` (Prometheus text; labels are bounded sets such as event type
//! and reason, never an entity), `/healthz` (the process is up) and
//! `/readyz` (the engine has joined its consumer group and is deciding).
//!
//! Admin endpoints, which need `Authorization: Bearer <token>`: `/status`
//! (versions in force and the last rules reload, with the reason a refused
//! one was refused) and `POST /admin/reload` (the reload SIGHUP triggers;
//! answers with its outcome). The token is read from a file or an
//! environment variable apart from the config (see `docs/security.md`);
//! only its SHA-256 digest is kept, and a presented token is compared by
//! digest in constant time, so neither its content nor its length leaks
//! through timing. Without a configured token the admin endpoints are off.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::reload::ReloadRequests;

/// Installs the process-wide Prometheus recorder; latency metrics become
/// histograms with buckets from 1 us to 1 s.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    let buckets = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0];
    PrometheusBuilder::new()
        .set_buckets(&buckets)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Produces the `/status` document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The environment variable that may hold the admin token itself (it wins
/// over `http.admin_token_file`).
pub const ADMIN_TOKEN_ENV: &str = "RISKD_ADMIN_TOKEN";
/// Shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("cannot read the admin token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "the admin token from {origin} has {len} characters; at least {MIN_TOKEN_CHARS} are required \
         (`riskd keys admin-token --out FILE` writes a good one)"
    )]
    TooShort { origin: String, len: usize },
    #[error("the admin token from {origin} contains spaces or control characters")]
    BadCharacters { origin: String },
}

/// The bearer token the admin endpoints require, kept as its digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token from text (surrounding whitespace, such as a file's final
    /// newline, is ignored). `origin` names where it came from, for errors.
    pub fn new(text: &str, origin: &str) -> Result<AdminToken, AdminTokenError> {
        let token = text.trim();
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AdminTokenError::BadCharacters { origin: origin.into() });
        }
        let len = token.chars().count();
        if len < MIN_TOKEN_CHARS {
            return Err(AdminTokenError::TooShort { origin: origin.into(), len });
        }
        Ok(AdminToken { digest: Sha256::digest(token.as_bytes()).into() })
    }

    /// The token in force: `env` (the value of [`ADMIN_TOKEN_ENV`]) when
    /// set, else the file when it exists, else none (admin endpoints off).
    pub fn resolve(env: Option<&str>, file: &Path) -> Result<Option<AdminToken>, AdminTokenError> {
        if let Some(text) = env {
            return AdminToken::new(text, ADMIN_TOKEN_ENV).map(Some);
        }
        if file.as_os_str().is_empty() || !file.exists() {
            return Ok(None);
        }
        let shown = file.display().to_string();
        let text =
            std::fs::read_to_string(file).map_err(|source| AdminTokenError::Read { path: shown.clone(), source })?;
        AdminToken::new(&text, &shown).map(Some)
    }

    /// A new random token: 32 bytes from the OS, in hex.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Whether an `Authorization` header carries this token.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(presented) = value.strip_prefix("Bearer ") else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// What the admin endpoints need: the token (none: they are off) and the
/// channel to the rules watcher (none: reload is not available).
#[derive(Clone, Default)]
pub struct Admin {
    pub token: Option<AdminToken>,
    pub reload: Option<ReloadRequests>,
}

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    status: StatusFn,
    admin: Admin,
}

impl Ops {
    /// The response to send instead when the request may not use an admin
    /// endpoint.
    fn denied(&self, headers: &HeaderMap) -> Option<Response> {
        match &self.admin.token {
            Some(t) if t.accepts(headers) => None,
            Some(_) => Some((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"riskd-admin\"")],
                "a valid admin token is required: Authorization: Bearer <token>\n",
            )
                .into_response()),
            None => Some((
                StatusCode::FORBIDDEN,
                "admin endpoints are off: no admin token is configured (http.admin_token_file or RISKD_ADMIN_TOKEN)\n",
            )
                .into_response()),
        }
    }
}

async fn status(State(o): State<Ops>, headers: HeaderMap) -> Response {
    if let Some(denied) = o.denied(&headers) {
        return denied;
    }
    axum::Json((o.status)()).into_response()
}

/// Longest an admin reload request waits for the watcher's answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

async fn reload(State(o): State<Ops>, headers: HeaderMap) -> Response {
    if let Some(denied) = o.denied(&headers) {
        return denied;
    }
    let unavailable = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    let Some(requests) = &o.admin.reload else {
        return unavailable("rules reload is not available in this process");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if requests.send(reply).await.is_err() {
        return unavailable("the rules watcher has stopped (the engine is shutting down)");
    }
    match tokio::time::timeout(RELOAD_TIMEOUT, answer).await {
        Ok(Ok(outcome)) => {
            // A refused change is a valid request with an unusable result.
            let code = if outcome.last_outcome == Some("rejected") {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (code, axum::Json(outcome)).into_response()
        }
        Ok(Err(_)) => unavailable("the rules watcher stopped before answering"),
        Err(_) => unavailable("the reload did not finish in time; see /status"),
    }
}

/// Serves the ops endpoints until `shutdown` resolves.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    status_doc: StatusFn,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(|State(o): State<Ops>| async move { o.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(o): State<Ops>| async move {
                if o.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route("/status", get(status))
        .route("/admin/reload", post(reload))
        .with_state(Ops { metrics, ready, status: status_doc, admin });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "ops HTTP server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[test]
    fn tokens_are_checked_for_length_and_characters() {
        let good = AdminToken::generate();
        assert_eq!(good.len(), 64);
        assert!(AdminToken::new(&format!("{good}\n"), "test").is_ok());
        let short = AdminToken::new("abc", "test").unwrap_err().to_string();
        assert!(short.contains("has 3 characters; at least 32"), "{short}");
        let spaced = AdminToken::new(&format!("{} {}", &good[..20], &good[20..]), "test").unwrap_err();
        assert!(matches!(spaced, AdminTokenError::BadCharacters { .. }));
    }

    #[test]
    fn only_the_exact_token_is_accepted() {
        let text = AdminToken::generate();
        let token = AdminToken::new(&text, "test").unwrap();
        assert!(token.accepts(&bearer(&text)));
        assert!(!token.accepts(&HeaderMap::new()));
        assert!(!token.accepts(&bearer(&text[..63])));
        assert!(!token.accepts(&bearer(&format!("{text}0"))));
        assert!(!token.accepts(&bearer(&AdminToken::generate())));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {text}")).unwrap());
        assert!(!token.accepts(&basic));
        // The digest, not the token, is what is kept.
        assert!(!format!("{token:?}").contains(&text));
    }

    #[test]
    fn the_environment_wins_over_the_file_and_no_token_means_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        assert!(AdminToken::resolve(None, &file).unwrap().is_none());
        let from_file = AdminToken::generate();
        std::fs::write(&file, format!("{from_file}\n")).unwrap();
        let t = AdminToken::resolve(None, &file).unwrap().unwrap();
        assert!(t.accepts(&bearer(&from_file)));
        let from_env = AdminToken::generate();
        let t = AdminToken::resolve(Some(&from_env), &file).unwrap().unwrap();
        assert!(t.accepts(&bearer(&from_env)) && !t.accepts(&bearer(&from_file)));
        std::fs::write(&file, "short").unwrap();
        let e = AdminToken::resolve(None, &file).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()) && e.contains("5 characters"), "{e}");
    }
}
