//! Metrics for `orchestrator serve`: the `--metrics-listen` flag, a tower
//! layer that counts and times every gRPC call, and the plain-HTTP
//! `/metrics` endpoint that serves the process's [`MetricsRegistry`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use drover_metrics::{Buckets, CounterFamily, HistogramFamily, MetricsRegistry, ObserveDuration};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// Where `/metrics` is served: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetricsListen(pub(crate) Option<SocketAddr>);

/// The value of `--metrics-listen` that disables the endpoint.
const OFF: &str = "off";

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == OFF {
            return Ok(MetricsListen(None));
        }
        text.parse()
            .map(|addr| MetricsListen(Some(addr)))
            .map_err(|_| format!("{text:?} is neither an address like 127.0.0.1:7401 nor {OFF:?}"))
    }
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str(OFF),
        }
    }
}

/// The running `/metrics` endpoint; dropping it aborts the server.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl MetricsServer {
    /// Binds `listen` (a bad address fails the start, like `--listen`) and
    /// serves `registry`; `None` when the endpoint is `off`.
    pub(crate) async fn start(
        listen: MetricsListen,
        registry: MetricsRegistry,
    ) -> anyhow::Result<Option<MetricsServer>> {
        let Some(addr) = listen.0 else {
            tracing::info!("metrics endpoint off");
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr} (--metrics-listen)"))?;
        let bound = listener
            .local_addr()
            .context("reading the bound metrics address")?;
        tracing::info!(addr = %bound, "serving metrics at http://{bound}/metrics");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_metrics(listener, registry, stop.clone()));
        Ok(Some(MetricsServer {
            stop,
            task: AbortOnDropHandle::new(task),
        }))
    }

    /// Stops taking connections and drops the open ones.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the metrics server task failed");
        }
    }
}

/// Serves `registry` at `GET /metrics` on `listener` (HTTP/1.1) until
/// `stop` fires; connections still open then are dropped. Any other path is
/// 404, any other method 405.
async fn serve_metrics(listener: TcpListener, registry: MetricsRegistry, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection failures (e.g. too many open files):
                    // keep serving, the next accept may succeed.
                    tracing::warn!(%error, "accepting a /metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let registry = registry.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&registry, &req)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "/metrics connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}

fn respond<B>(registry: &MetricsRegistry, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let plain = |status: http::StatusCode, text: String| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text)))
            .expect("a static response is valid")
    };
    if req.uri().path() != "/metrics" {
        return plain(
            http::StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "only GET /metrics\n".into(),
        );
    }
    match registry.encode() {
        Ok(text) => http::Response::builder()
            .header(http::header::CONTENT_TYPE, drover_metrics::CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .expect("a static response is valid"),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {error}\n"),
            )
        }
    }
}

/// `service`, `method`, `code`.
type HandledLabels = [(&'static str, String); 3];
/// `service`, `method`.
type MethodLabels = [(&'static str, String); 2];

/// The gRPC server families, shared by every call.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetrics {
    handled: CounterFamily<HandledLabels>,
    handling: HistogramFamily<MethodLabels>,
}

impl GrpcMetrics {
    pub(crate) fn new(registry: &MetricsRegistry) -> Self {
        GrpcMetrics {
            handled: registry.counter_family(
                "drover_grpc_server_handled",
                "gRPC calls completed on the server, by service, method and status code",
            ),
            handling: registry.histogram_family(
                "drover_grpc_server_handling_seconds",
                "Time from a gRPC call's arrival until its response (or stream) ended",
                &Buckets::latency(),
            ),
        }
    }
}

/// A tower layer for the tonic server: each call is counted by service,
/// method and status code and timed until its response body ends.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetricsLayer(pub(crate) GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut call = CallRecord {
            metrics: self.metrics.clone(),
            path: req.uri().path().to_string(),
            started: Instant::now(),
            code: None,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // An error answer is trailers-only: its status is in the headers.
            call.code = grpc_status(response.headers());
            Ok(response.map(|body| tonic::body::Body::new(MeteredBody { inner: body, call })))
        })
    }
}

/// One call's measurement, recorded when the response body is dropped
/// (after its last frame, or early when the client went away).
struct CallRecord {
    metrics: GrpcMetrics,
    path: String,
    started: Instant,
    code: Option<tonic::Code>,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // A response that ended without a status was cut off: the client
        // cancelled (or the connection broke), which gRPC reports as such.
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        let (service, method) = if code == tonic::Code::Unimplemented {
            // Unknown paths come from clients: one label, not one per path.
            ("unknown".to_string(), "unknown".to_string())
        } else {
            split_path(&self.path)
        };
        self.metrics
            .handled
            .get_or_create(&[
                ("service", service.clone()),
                ("method", method.clone()),
                ("code", code_name(code).to_string()),
            ])
            .inc();
        self.metrics
            .handling
            .get_or_create(&[("service", service), ("method", method)])
            .observe_duration(self.started.elapsed());
    }
}

/// `/pkg.Service/Method` as (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_string(), method.to_string()),
        None => (trimmed.to_string(), String::new()),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.trim().parse().ok()?))
}

/// The canonical names grpc-go and go-grpc-prometheus use, so dashboards
/// written for them work unchanged.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A response body that reads the status from the trailers as they pass.
struct MeteredBody {
    inner: tonic::body::Body,
    call: CallRecord,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.call.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.code = Some(status.code()),
            Poll::Ready(None) => {
                // Ended without trailers or header status: the stream broke.
                this.call.code.get_or_insert(tonic::Code::Unknown);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        assert_eq!(
            "127.0.0.1:7401".parse::<MetricsListen>(),
            Ok(MetricsListen(Some("127.0.0.1:7401".parse().unwrap())))
        );
        assert_eq!("off".parse::<MetricsListen>(), Ok(MetricsListen(None)));
        for bad in ["", "7401", "localhost:7401", "Off", "127.0.0.1"] {
            let err = bad.parse::<MetricsListen>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(MetricsListen(None).to_string(), "off");
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/orchestrator.v1.SystemService/GetInfo"),
            (
                "orchestrator.v1.SystemService".to_string(),
                "GetInfo".to_string()
            )
        );
        assert_eq!(split_path("/odd"), ("odd".to_string(), String::new()));
    }

    #[test]
    fn only_get_metrics_is_served() {
        let registry = MetricsRegistry::new();
        registry.counter("drover_t_served", "Served").inc();
        let get = |method: http::Method, path: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            respond(&registry, &req)
        };
        let ok = get(http::Method::GET, "/metrics");
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert_eq!(
            ok.headers()[http::header::CONTENT_TYPE],
            drover_metrics::CONTENT_TYPE
        );
        assert_eq!(
            get(http::Method::GET, "/").status(),
            http::StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(http::Method::POST, "/metrics").status(),
            http::StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
