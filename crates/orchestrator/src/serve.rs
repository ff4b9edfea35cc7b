//! `orchestrator serve`: the gRPC API on the chosen store, with health,
//! reflection, etcd's v3 API over the same store (unless `--no-etcd-api`),
//! metrics at `/metrics`, and an orderly shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use drover_api::pb::orchestrator::v1::rc_service_server::RcServiceServer;
use drover_api::pb::orchestrator::v1::system_service_server::SystemServiceServer;
use drover_api::{RcApi, StoreLocation, identify_caller};
use drover_etcd_api::{EtcdApi, EtcdApiConfig, MemberIdentity};
use drover_store::Store;
use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
use drover_store::metered::Metered;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::cli::{ServeArgs, StoreChoice};
use crate::farm::RunningFarm;
use crate::metrics::{GrpcMetrics, GrpcMetricsLayer, MetricsServer};
use crate::system::SystemApi;
use crate::tls;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Handlers first, so a signal that arrives while starting up is not
    // fatal to the process (the default action) but an orderly stop.
    let shutdown = ShutdownSignal::install()?;
    // Every refusal comes before the store is opened: a bad flag changes nothing.
    let tls = tls::server_config(&args.tls)?;
    tls::check_exposure(args.listen, tls.is_some(), args.tls.insecure)?;
    let etcd_tls = tls::etcd_config(&args.etcd_tls)?;
    match args.store.choice()? {
        StoreChoice::Memory => {
            let store = EmbeddedStore::in_memory();
            // Nothing survives the process, so neither does its identity.
            let identity = MemberIdentity::random();
            let served = serve(
                store.clone(),
                StoreLocation::InMemory,
                identity,
                &args,
                tls,
                shutdown,
            )
            .await;
            finish(served, close_embedded(&store).await)
        }
        StoreChoice::DataDir(dir) => {
            let store = EmbeddedStore::open(&dir, EmbeddedConfig::default())
                .await
                .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
            let identity = match MemberIdentity::load_or_create(&dir) {
                Ok(identity) => identity,
                Err(e) => {
                    let opened = Err(e).context("loading the etcd member identity");
                    return finish(opened, close_embedded(&store).await);
                }
            };
            let location = StoreLocation::DataDir(dir);
            let served = serve(store.clone(), location, identity, &args, tls, shutdown).await;
            finish(served, close_embedded(&store).await)
        }
        StoreChoice::Etcd(endpoints) => {
            let config = drover_store_etcd::EtcdConfig {
                tls: etcd_tls,
                ..Default::default()
            };
            let store = drover_store_etcd::EtcdStore::connect(endpoints.clone(), config)
                .await
                .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
            let location = StoreLocation::Etcd { endpoints };
            serve(
                store,
                location,
                MemberIdentity::random(),
                &args,
                tls,
                shutdown,
            )
            .await
        }
    }
}

async fn close_embedded(store: &EmbeddedStore) -> anyhow::Result<()> {
    store.close().await.context("closing the embedded store")?;
    tracing::info!("embedded store closed");
    Ok(())
}

/// The serving error wins; a close error alone is still a failure.
fn finish(served: anyhow::Result<()>, closed: anyhow::Result<()>) -> anyhow::Result<()> {
    match (served, closed) {
        (Err(e), Err(close)) => {
            tracing::error!("{close:#}");
            Err(e)
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Serves until a shutdown signal, then drains in-flight requests for at most
/// `args.shutdown_grace`.
async fn serve<S: Store>(
    store: S,
    location: StoreLocation,
    identity: MemberIdentity,
    args: &ServeArgs,
    tls: Option<ServerTlsConfig>,
    mut shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    // What etcd clients are told to connect to (member list).
    let scheme = if tls.is_some() { "https" } else { "http" };
    let transport = match (&tls, &args.tls.tls_client_ca) {
        (None, _) => "plaintext",
        (Some(_), None) => "tls",
        (Some(_), Some(_)) => "mutual tls",
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
    // One registry for the process: the store and the gRPC layer export
    // through it, and /metrics serves it.
    let registry = drover_metrics::MetricsRegistry::new();
    let store = Metered::new(store, &registry);
    let metrics_server = MetricsServer::start(args.metrics_listen, registry.clone()).await?;
    // The RC farm works on the same (metered) store handle as the API.
    let farm = args
        .farm
        .config(drover_store::keys::Keys::default(), &registry)?
        .map(|config| RunningFarm::start(store.clone(), config));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SystemServiceServer<SystemApi<Metered<S>>>>()
        .await;
    health
        .set_serving::<RcServiceServer<RcApi<Metered<S>>>>()
        .await;
    let serve_etcd = !args.no_etcd_api;
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(drover_api::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        if serve_etcd {
            builder.register_encoded_file_descriptor_set(drover_etcd_api::pb::FILE_DESCRIPTOR_SET)
        } else {
            builder
        }
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    // Older grpcurl and grpcui speak only v1alpha.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service")?;
    let etcd = serve_etcd.then(|| {
        let config = EtcdApiConfig {
            client_urls: vec![format!("{scheme}://{addr}")],
            ..EtcdApiConfig::default()
        };
        EtcdApi::new(store.clone(), identity, config)
    });

    let backend = store.backend_name();
    let rcs = RcServiceServer::new(RcApi::new(
        store.clone(),
        drover_store::keys::Keys::default(),
    ));
    let system = SystemServiceServer::new(SystemApi::new(store, location.clone()));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("--tls-cert/--tls-key/--tls-client-ca: building the TLS configuration")?;
    }
    let router = builder
        .trace_fn(|req| {
            let id = next_request_id();
            tracing::info_span!("grpc", id, path = %req.uri().path())
        })
        // Every service on the port sees who calls (drover_api::Caller).
        .layer(InterceptorLayer::new(identify_caller))
        .layer(GrpcMetricsLayer(GrpcMetrics::new(&registry)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(system)
        .add_service(rcs)
        .add_optional_service(etcd.as_ref().map(EtcdApi::kv_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::watch_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::lease_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::maintenance_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::cluster_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::election_server))
        .add_optional_service(etcd.as_ref().map(EtcdApi::lock_server));
    // TCP_NODELAY: tonic sets it only on listeners it binds itself. Without
    // it a small response waits for the client's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        // A dropped sender also stops the server.
        let _ = stop_rx.await;
    }));
    tracing::info!(
        %addr,
        backend,
        transport,
        store = ?location,
        etcd_api = serve_etcd,
        member_id = format_args!("{:x}", identity.member_id),
        "listening on {addr}"
    );

    let signal = tokio::select! {
        finished = &mut server => {
            // The server stopped on its own: that is always a failure here.
            finished.context("the gRPC server task panicked")?.context("serving gRPC")?;
            anyhow::bail!("the gRPC server stopped unexpectedly");
        }
        signal = shutdown.recv() => signal,
    };
    tracing::info!(signal, "shutting down");
    // Tell load balancers first, then stop taking connections.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<SystemServiceServer<SystemApi<Metered<S>>>>()
        .await;
    health
        .set_not_serving::<RcServiceServer<RcApi<Metered<S>>>>()
        .await;
    let _ = stop_tx.send(());
    // The farm first: it releases its RCs' buckets once their reconciles
    // drained, so other farms take over at once rather than after its lease.
    if let Some(farm) = farm {
        farm.stop(args.shutdown_grace).await;
    }
    tokio::select! {
        finished = &mut server => {
            finished
                .context("the gRPC server task panicked")?
                .context("serving gRPC")?;
            tracing::info!("gRPC server stopped");
        }
        () = tokio::time::sleep(args.shutdown_grace) => {
            // Long-lived streams (health Watch) may never end by themselves.
            server.abort();
            tracing::warn!(
                grace = ?args.shutdown_grace,
                "requests still running after the shutdown grace period; dropped them"
            );
        }
        signal = shutdown.recv() => {
            // An impatient operator (Ctrl-C twice) skips the grace period;
            // the store is still closed properly.
            server.abort();
            tracing::warn!(signal, "second signal: dropped the requests still running");
        }
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.stop().await;
    }
    Ok(())
}

/// A process-unique id for each request's log span.
fn next_request_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// SIGINT or SIGTERM.
pub(crate) struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The name of the first signal received.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
