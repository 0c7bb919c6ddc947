//! `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (the engine has joined its consumer group and is deciding) and `/status`
//! (versions in force and the last rules reload, with the reason a refused
//! one was refused). Read-only; bound to loopback by default.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    status: StatusFn,
}

/// Serves the ops endpoints until `shutdown` resolves.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    status: StatusFn,
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
        .route("/status", get(|State(o): State<Ops>| async move { axum::Json((o.status)()) }))
        .with_state(Ops { metrics, ready, status });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "ops HTTP server stopped");
        }
    });
    Ok(bound)
}
