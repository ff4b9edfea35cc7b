use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::EtcdTls;

/// The common name of [`TestPki`]'s client certificate.
pub const TEST_CLIENT_NAME: &str = "drover-test-client";

/// A throwaway certificate authority with one server and one client
/// certificate, written as PEM files into a temporary directory (removed on
/// drop), for TLS and mutual-TLS tests of etcd, `orchestrator serve`,
/// `etcdctl` and [`crate::EtcdStore`].
///
/// The server certificate is valid for `localhost`, `127.0.0.1` and `::1`;
/// the client certificate's subject is `CN=drover-test-client,O=drover tests`.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl TestPki {
    /// Generates the CA, server and client certificates and writes
    /// `ca.pem`, `server.pem`, `server-key.pem`, `client.pem` and
    /// `client-key.pem`.
    pub fn generate() -> io::Result<TestPki> {
        let dir = tempfile::Builder::new().prefix("drover-pki-").tempdir()?;
        let ca = certificate_authority("drover test CA")?;

        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(other)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(other)?;
        let server_cert = server.signed_by(&server_key, &*ca).map_err(other)?;

        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        client
            .distinguished_name
            .push(DnType::CommonName, TEST_CLIENT_NAME);
        client
            .distinguished_name
            .push(DnType::OrganizationName, "drover tests");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(other)?;
        let client_cert = client.signed_by(&client_key, &*ca).map_err(other)?;

        let pki = TestPki {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem)?;
        std::fs::write(pki.server_cert_path(), server_cert.pem())?;
        std::fs::write(pki.server_key_path(), server_key.serialize_pem())?;
        std::fs::write(pki.client_cert_path(), &pki.client_cert_pem)?;
        std::fs::write(pki.client_key_path(), &pki.client_key_pem)?;
        Ok(pki)
    }

    /// A client certificate and key from a different CA, which a server
    /// trusting [`ca_path`](Self::ca_path) must refuse. Returns the paths of
    /// `stranger.pem` and `stranger-key.pem`.
    pub fn stranger_client(&self) -> io::Result<(PathBuf, PathBuf)> {
        let ca = certificate_authority("stranger CA")?;
        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        client
            .distinguished_name
            .push(DnType::CommonName, "stranger");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(other)?;
        let cert = client.signed_by(&key, &*ca).map_err(other)?;
        let (cert_path, key_path) = (self.path("stranger.pem"), self.path("stranger-key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }

    /// The CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// The server certificate (for `localhost`, `127.0.0.1`, `::1`).
    pub fn server_cert_path(&self) -> PathBuf {
        self.path("server.pem")
    }
    /// The server certificate's key.
    pub fn server_key_path(&self) -> PathBuf {
        self.path("server-key.pem")
    }
    /// The client certificate (`CN=`[`TEST_CLIENT_NAME`]).
    pub fn client_cert_path(&self) -> PathBuf {
        self.path("client.pem")
    }
    /// The client certificate's key.
    pub fn client_key_path(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// TLS settings for [`crate::EtcdStore`]: trust the CA, present the
    /// client certificate.
    pub fn etcd_tls(&self) -> EtcdTls {
        EtcdTls::new(self.ca_pem.as_bytes()).with_client_identity(
            self.client_cert_pem.as_bytes(),
            self.client_key_pem.as_bytes(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        Path::join(self.dir.path(), name)
    }
}

fn certificate_authority(name: &str) -> io::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(other)?).map_err(other)
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("generating a test certificate: {e}"))
}
