use std::path::Path;
use std::time::Duration;

use drover_store::StoreError;

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
    /// TLS to the endpoints (then `https://` or bare `host:port` endpoints);
    /// `None` speaks plaintext HTTP/2.
    pub tls: Option<EtcdTls>,
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
            tls: None,
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
    /// Talk TLS to the endpoints; see [`EtcdTls`].
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }
    pub fn with_watch_retry(mut self, min: Duration, max: Duration) -> Self {
        self.watch_retry_min = min;
        self.watch_retry_max = max.max(min);
        self
    }
}

/// TLS settings for etcd (or an `orchestrator serve` with TLS): the CA that
/// signed the servers' certificates and, for servers that require client
/// certificates (mutual TLS), the client's certificate and key. All PEM.
///
/// ```
/// use drover_store_etcd::{EtcdConfig, EtcdTls};
///
/// let config = EtcdConfig::default().with_tls(
///     EtcdTls::new("-----BEGIN CERTIFICATE-----\n...")
///         .with_client_identity("-----BEGIN CERTIFICATE-----\n...", "-----BEGIN PRIVATE KEY-----\n..."),
/// );
/// // The key never shows in logs.
/// assert!(!format!("{config:?}").contains("PRIVATE KEY"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate(s) that the servers' certificates must chain to.
    pub ca_pem: Vec<u8>,
    /// The client certificate (chain) and its private key, for mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the server certificate against, when it is not
    /// the endpoint's host (e.g. endpoints given by IP with a DNS-only
    /// certificate).
    pub domain_name: Option<String>,
}

impl EtcdTls {
    /// Verify the servers against this CA; present no client certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        EtcdTls {
            ca_pem: ca_pem.into(),
            client_identity: None,
            domain_name: None,
        }
    }

    /// Present this certificate and key to servers that ask for one.
    pub fn with_client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Verify the server certificate against this name instead of the
    /// endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// Reads the CA and, optionally, the client certificate and key from PEM
    /// files (etcdctl's `--cacert`, `--cert`, `--key`). A file that cannot be
    /// read is an `InvalidArgument` naming it.
    pub fn from_pem_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, StoreError> {
        let mut tls = EtcdTls::new(read_pem(ca, "CA certificate")?);
        if let Some((cert, key)) = client {
            tls = tls.with_client_identity(
                read_pem(cert, "client certificate")?,
                read_pem(key, "client key")?,
            );
        }
        Ok(tls)
    }

    pub(crate) fn to_tonic(&self) -> etcd_client::TlsOptions {
        let mut options = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client_identity {
            options = options.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            options = options.domain_name(name.clone());
        }
        options
    }
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_identity", &self.client_identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    let pem = std::fs::read(path).map_err(|e| {
        StoreError::InvalidArgument(format!("reading the {what} {}: {e}", path.display()))
    })?;
    if !pem.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(StoreError::InvalidArgument(format!(
            "the {what} {} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = EtcdTls::from_pem_files(&missing, None).unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("CA certificate"), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"not a certificate").unwrap();
        let err = EtcdTls::from_pem_files(&garbage, None).unwrap_err();
        assert!(err.to_string().contains("not PEM"), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }
}
