//! Test support (feature `testing`): the API served in-process on a
//! loopback port, for clients that need a real connection.

use std::net::SocketAddr;

use drover_store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

use crate::{EtcdApi, EtcdApiConfig, MemberIdentity};

/// A tonic server with every service of an [`EtcdApi`] on a free loopback
/// port. Dropping it stops the server.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `store` with a random identity and `config`.
    pub async fn start<S: Store>(store: S, config: EtcdApiConfig) -> std::io::Result<Self> {
        Self::serve(EtcdApi::new(store, MemberIdentity::random(), config)).await
    }

    /// Serves an existing API.
    pub async fn serve<S: Store>(api: EtcdApi<S>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        // As `orchestrator serve` does: without TCP_NODELAY a small answer
        // waits for the client's delayed ACK.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = tonic::transport::Server::builder().add_routes(api.into_router());
        let task = tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("test etcd API server failed: {e}");
            }
        });
        Ok(TestServer {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for etcd clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected channel, for the generated clients in [`crate::pb`].
    pub async fn channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Channel::from_shared(self.endpoint())
            .expect("a loopback URL is a valid URI")
            .connect()
            .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams left open by clients would keep a graceful stop waiting.
        self.task.abort();
    }
}
