//! Who is calling: the identity the transport proved, handed to every
//! request handler so that authorization can be decided per identity.

use std::net::SocketAddr;

use tonic::{Request, Status};

/// The caller of one request, as the transport established it.
///
/// `orchestrator serve` inserts it into every request's extensions (with
/// [`identify_caller`] as a tonic interceptor on the whole server), so any
/// handler, of any service on the port, reads it with [`Caller::of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The peer's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// What the peer proved about itself.
    pub identity: Identity,
}

/// What a caller proved about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No client certificate: a plaintext connection, or TLS without client
    /// authentication.
    Anonymous,
    /// A client certificate that the server's client CA verified during the
    /// TLS handshake.
    Certificate(CertificateIdentity),
}

/// The names in a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The subject's distinguished name in RFC 4514 form, e.g. `CN=agent-7,O=nodes`.
    pub subject: String,
    /// The subject's first common name (CN), the usual principal name.
    pub common_name: Option<String>,
    /// DNS names from the subject alternative name extension.
    pub dns_names: Vec<String>,
}

impl Caller {
    /// The caller that [`identify_caller`] attached to a request; `None` on
    /// a request that did not pass through it (e.g. a handler called
    /// directly in a unit test).
    pub fn of<T>(request: &Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }

    /// Establishes the caller of a request from its transport information:
    /// the remote address and, over TLS, the client's certificate chain
    /// (its first certificate is the client's own).
    ///
    /// Fails with `Unauthenticated` if a presented certificate cannot be
    /// read, which cannot happen for one the TLS handshake verified.
    pub fn from_transport<T>(request: &Request<T>) -> Result<Caller, Status> {
        let identity = match request.peer_certs() {
            Some(chain) => match chain.first() {
                Some(leaf) => Identity::Certificate(CertificateIdentity::from_der(leaf)?),
                None => Identity::Anonymous,
            },
            None => Identity::Anonymous,
        };
        Ok(Caller {
            remote_addr: request.remote_addr(),
            identity,
        })
    }

    /// The certificate's common name, if the caller presented a certificate.
    pub fn common_name(&self) -> Option<&str> {
        match &self.identity {
            Identity::Certificate(cert) => cert.common_name.as_deref(),
            Identity::Anonymous => None,
        }
    }
}

impl CertificateIdentity {
    /// Reads the names of a DER-encoded X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<CertificateIdentity, Status> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
            Status::unauthenticated(format!("the client certificate cannot be read: {e}"))
        })?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(CertificateIdentity {
            subject: subject.to_string(),
            common_name,
            dns_names,
        })
    }
}

/// A tonic interceptor that attaches the [`Caller`] to every request. Use it
/// server-wide (`Server::builder().layer(InterceptorLayer::new(identify_caller))`)
/// so that no service can be reached without it.
pub fn identify_caller(mut request: Request<()>) -> Result<Request<()>, Status> {
    let caller = Caller::from_transport(&request)?;
    request.extensions_mut().insert(caller);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_transport_information_is_anonymous() {
        let request = identify_caller(Request::new(())).unwrap();
        assert_eq!(
            Caller::of(&request),
            Some(&Caller {
                remote_addr: None,
                identity: Identity::Anonymous
            })
        );
        assert_eq!(Caller::of(&request).unwrap().common_name(), None);
    }

    #[test]
    fn a_certificate_gives_its_subject_common_name_and_dns_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["agent-7.nodes.example".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agent-7");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "nodes");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();

        let identity = CertificateIdentity::from_der(cert.der()).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("agent-7"));
        assert!(
            identity.subject.contains("CN=agent-7"),
            "{}",
            identity.subject
        );
        assert!(identity.subject.contains("O=nodes"), "{}", identity.subject);
        assert_eq!(identity.dns_names, vec!["agent-7.nodes.example".to_owned()]);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let status = CertificateIdentity::from_der(b"not a certificate").unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("client certificate"), "{status}");
    }
}
