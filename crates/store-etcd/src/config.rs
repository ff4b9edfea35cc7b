use std::time::Duration;

/// Connection settings of an [`crate::EtcdStore`].
///
/// The defaults suit a cluster on a LAN: 5 s to connect, 5 s per request,
/// HTTP/2 pings every 10 s while a stream (watch, keep-alive) is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Time allowed to open a connection to an endpoint.
    pub connect_timeout: Duration,
    /// Time allowed for one unary request (get, put, txn, lease call), and
    /// for opening a watch or keep-alive stream. Past it the call fails with
    /// a retryable `StoreError::Unavailable` instead of hanging.
    pub request_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings on a connection with open streams.
    /// etcd's server refuses pings more frequent than 5 s by default
    /// (`--grpc-keepalive-min-time`).
    pub keep_alive_interval: Duration,
    /// Time to wait for a ping's answer before the connection is declared dead.
    pub keep_alive_timeout: Duration,
    /// First delay before re-establishing a watch after its connection broke.
    pub watch_retry_min: Duration,
    /// Upper bound of the doubling delay between watch re-establishments.
    pub watch_retry_max: Duration,
    /// Undelivered watch batches buffered per watch before etcd is
    /// back-pressured.
    pub watch_buffer: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            watch_retry_min: Duration::from_millis(50),
            watch_retry_max: Duration::from_secs(2),
            watch_buffer: 64,
        }
    }
}

impl EtcdConfig {
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }
    pub fn with_watch_retry(mut self, min: Duration, max: Duration) -> Self {
        self.watch_retry_min = min;
        self.watch_retry_max = max.max(min);
        self
    }
}
