//! Transport security: `serve`'s TLS (optionally mutual), the refusal to
//! serve plaintext off loopback, and the client side of the client commands
//! (`info`, `rc ...`) and of the etcd connection.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use drover_store_etcd::EtcdTls;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use crate::cli::{ClientArgs, EtcdTlsArgs, ServeTlsArgs};

/// A client that never finishes its handshake must not hold a connection
/// (and its task) forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS configuration, or `None` for plaintext. Reads and checks
/// every file now, so a typo fails at start-up naming the flag.
pub(crate) fn server_config(args: &ServeTlsArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read_pem(cert, "--tls-cert", "CERTIFICATE")?,
        read_pem(key, "--tls-key", "PRIVATE KEY")?,
    );
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &args.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read_pem(
            ca,
            "--tls-client-ca",
            "CERTIFICATE",
        )?));
    }
    Ok(Some(config))
}

/// Whoever reaches the port controls what runs on every node: plaintext is
/// allowed on loopback, and elsewhere only when the operator said
/// `--insecure`.
pub(crate) fn check_exposure(listen: SocketAddr, tls: bool, insecure: bool) -> anyhow::Result<()> {
    if tls || insecure || is_loopback(listen.ip()) {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve without TLS on {listen}, which is not a loopback address: whoever \
         reaches this port controls what runs on every node. Give --tls-cert and --tls-key \
         (and --tls-client-ca to require client certificates), or pass --insecure to serve \
         plaintext anyway"
    )
}

/// Loopback, including IPv4-mapped IPv6 loopback. The unspecified address
/// (`0.0.0.0`, `::`) listens on every interface, so it is not.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// TLS to the etcd of `--etcd-endpoints`, as etcdctl's `--cacert`, `--cert`, `--key`.
pub(crate) fn etcd_config(args: &EtcdTlsArgs) -> anyhow::Result<Option<EtcdTls>> {
    let Some(ca) = &args.etcd_cacert else {
        return Ok(None);
    };
    let client = match (&args.etcd_cert, &args.etcd_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    Ok(Some(EtcdTls::from_pem_files(ca, client)?))
}

/// A channel to the orchestrator of a client command's `--endpoint`.
pub(crate) async fn connect(args: &ClientArgs) -> anyhow::Result<Channel> {
    client_endpoint(args)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.server))
}

/// The endpoint a client command connects to. A bare `host:port` gets
/// `https://` when a CA is given and `http://` otherwise; an explicit
/// scheme must agree with the TLS flags.
pub(crate) fn client_endpoint(args: &ClientArgs) -> anyhow::Result<Endpoint> {
    let tls = args.cacert.is_some();
    let url = if args.server.contains("://") {
        args.server.clone()
    } else if tls {
        format!("https://{}", args.server)
    } else {
        format!("http://{}", args.server)
    };
    let https = url.starts_with("https://");
    if tls && !https {
        anyhow::bail!("--cacert needs an https:// server address, not {url}");
    }
    if https && !tls {
        anyhow::bail!("{url} uses TLS: give --cacert with the CA that signed its certificate");
    }
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("--endpoint {url} is not a valid address"))?;
    let Some(ca) = &args.cacert else {
        return Ok(endpoint);
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(
        ca,
        "--cacert",
        "CERTIFICATE",
    )?));
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config = config.identity(Identity::from_pem(
            read_pem(cert, "--cert", "CERTIFICATE")?,
            read_pem(key, "--key", "PRIVATE KEY")?,
        ));
    }
    endpoint
        .tls_config(config)
        .context("configuring TLS for --endpoint")
}

/// Reads a PEM file given with `flag`, which must hold at least one block
/// whose label ends with `label` (`CERTIFICATE`; `PRIVATE KEY` also matches
/// `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(path: &Path, flag: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    let has_block = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !has_block {
        anyhow::bail!(
            "{flag}: {} holds no PEM {label} (no \"-----BEGIN ...{label}-----\" line)",
            path.display()
        );
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_exactly_127_8_and_colon_colon_1() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn plaintext_off_loopback_needs_insecure() {
        let exposed: SocketAddr = "0.0.0.0:7400".parse().unwrap();
        let err = check_exposure(exposed, false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--insecure"), "{err}");
        assert!(err.contains("--tls-cert"), "{err}");
        assert!(err.contains("0.0.0.0:7400"), "{err}");
        check_exposure(exposed, true, false).unwrap();
        check_exposure(exposed, false, true).unwrap();
        check_exposure("127.0.0.1:7400".parse().unwrap(), false, false).unwrap();
        check_exposure("[::1]:7400".parse().unwrap(), false, false).unwrap();
    }

    #[test]
    fn pem_files_are_checked_for_their_kind_of_block() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        read_pem(&cert, "--tls-cert", "CERTIFICATE").unwrap();
        read_pem(&key, "--tls-key", "PRIVATE KEY").unwrap();

        let err = read_pem(&key, "--tls-cert", "CERTIFICATE")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--tls-cert: "), "{err}");
        assert!(err.contains("key.pem"), "{err}");
        let err = read_pem(&dir.path().join("absent.pem"), "--tls-key", "PRIVATE KEY").unwrap_err();
        let err = format!("{err:#}");
        assert!(err.starts_with("--tls-key: reading "), "{err}");
    }

    #[test]
    fn info_picks_the_scheme_from_the_tls_flags() {
        let args = |server: &str, cacert: Option<&str>| ClientArgs {
            server: server.into(),
            cacert: cacert.map(Into::into),
            cert: None,
            key: None,
        };
        let endpoint = client_endpoint(&args("127.0.0.1:7400", None)).unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:7400/");
        let err = client_endpoint(&args("https://127.0.0.1:7400", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cacert"), "{err}");
        let err = client_endpoint(&args("http://127.0.0.1:7400", Some("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
    }
}
