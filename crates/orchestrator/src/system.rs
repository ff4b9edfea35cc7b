//! `orchestrator.v1.SystemService` on any store.

use drover_api::pb::orchestrator::v1 as pb;
use drover_api::{ApiError, Caller, Identity, StoreInfo, StoreLocation, SystemInfo, to_status};
use drover_store::Store;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Serves `SystemService` from a store and what the server knows about it.
#[derive(Debug, Clone)]
pub(crate) struct SystemApi<S> {
    store: S,
    location: StoreLocation,
    started: Instant,
}

impl<S: Store> SystemApi<S> {
    pub(crate) fn new(store: S, location: StoreLocation) -> Self {
        SystemApi {
            store,
            location,
            started: Instant::now(),
        }
    }

    /// What the server is, as seen by `caller`.
    pub(crate) async fn info(&self, caller: Option<&Caller>) -> Result<SystemInfo, ApiError> {
        let revision = self.store.current_revision().await?;
        Ok(SystemInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: StoreInfo {
                backend: self.store.backend_name().to_string(),
                revision,
                location: self.location.clone(),
            },
            uptime: self.started.elapsed(),
            caller: caller.and_then(|caller| match &caller.identity {
                Identity::Certificate(cert) => Some(cert.subject.clone()),
                Identity::Anonymous => None,
            }),
        })
    }
}

#[tonic::async_trait]
impl<S: Store> pb::system_service_server::SystemService for SystemApi<S> {
    async fn get_info(
        &self,
        request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        match self.info(Caller::of(&request)).await {
            Ok(info) => Ok(Response::new(info.into())),
            Err(e) => {
                tracing::warn!(error = %e, "GetInfo failed");
                Err(to_status(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_store::Put;
    use drover_store::embedded::EmbeddedStore;
    use pb::system_service_server::SystemService;

    #[tokio::test(start_paused = true)]
    async fn get_info_reports_backend_revision_location_and_uptime() {
        let store = EmbeddedStore::in_memory();
        let api = SystemApi::new(store.clone(), StoreLocation::InMemory);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let written = store.put(Put::new("/drover/rcs/web", "x")).await.unwrap();

        let response = api
            .get_info(Request::new(pb::GetInfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        let info = SystemInfo::try_from(response).unwrap();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.store.backend, "embedded");
        assert_eq!(info.store.revision, written.revision);
        assert_eq!(info.store.location, StoreLocation::InMemory);
        assert_eq!(info.uptime, std::time::Duration::from_secs(3));
        assert_eq!(info.caller, None, "no caller attached: anonymous");
    }

    #[tokio::test]
    async fn get_info_names_a_certificate_caller() {
        let api = SystemApi::new(EmbeddedStore::in_memory(), StoreLocation::InMemory);
        let mut request = Request::new(pb::GetInfoRequest {});
        request.extensions_mut().insert(Caller {
            remote_addr: None,
            identity: Identity::Certificate(drover_api::CertificateIdentity {
                subject: "CN=agent-7,O=nodes".into(),
                common_name: Some("agent-7".into()),
                dns_names: vec![],
            }),
        });
        let response = api.get_info(request).await.unwrap().into_inner();
        assert_eq!(response.caller, "CN=agent-7,O=nodes");
    }

    #[tokio::test]
    async fn a_closed_store_is_unavailable() {
        let store = EmbeddedStore::in_memory();
        let api = SystemApi::new(store.clone(), StoreLocation::InMemory);
        store.close().await.unwrap();
        let status = api
            .get_info(Request::new(pb::GetInfoRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "store is closed");
    }
}
