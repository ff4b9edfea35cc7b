use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A loopback TCP proxy in front of one upstream (an etcd client port).
///
/// [`cut`](Self::cut) drops every proxied connection and refuses new ones
/// until [`heal`](Self::heal): to the client this looks like a network
/// partition, while the test can still reach etcd directly. Stops with the
/// proxy when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    open: AtomicBool,
    connections: parking_lot::Mutex<Vec<AbortHandle>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            open: AtomicBool::new(true),
            connections: parking_lot::Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            acceptor,
        })
    }

    /// The proxy's URL, to give clients instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drop every open connection and refuse new ones.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for conn in self.shared.connections.lock().drain(..) {
            conn.abort();
        }
    }

    /// Accept and forward connections again.
    pub fn heal(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if !shared.open.load(Ordering::SeqCst) {
            // Refused: the client sees its connection closed at once.
            drop(client);
            continue;
        }
        let upstream = shared.upstream;
        let task = tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(upstream).await {
                forward(client, server).await;
            }
        });
        let mut connections = shared.connections.lock();
        connections.retain(|c| !c.is_finished());
        connections.push(task.abort_handle());
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
