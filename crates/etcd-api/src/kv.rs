//! `etcdserverpb.KV` over the store.

use std::sync::Arc;

use drover_store::Store;
use tonic::{Request, Response, Status};

use crate::Shared;
use crate::convert::{self, Headers};
use crate::pb::etcdserverpb as etcd;
use crate::status::to_status;

/// The KV handler: Range, Put, DeleteRange, Txn and Compact, each one store
/// call.
#[derive(Debug)]
pub struct KvService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> KvService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        KvService { shared }
    }
}

#[tonic::async_trait]
impl<S: Store> etcd::kv_server::Kv for KvService<S> {
    async fn range(
        &self,
        request: Request<etcd::RangeRequest>,
    ) -> Result<Response<etcd::RangeResponse>, Status> {
        let get = convert::get(request.into_inner())?;
        let got = self
            .shared
            .store
            .get(get)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(self.shared.range_response(got)))
    }

    async fn put(
        &self,
        request: Request<etcd::PutRequest>,
    ) -> Result<Response<etcd::PutResponse>, Status> {
        let put = convert::put(request.into_inner());
        let done = self
            .shared
            .store
            .put(put)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(self.shared.put_response(done)))
    }

    async fn delete_range(
        &self,
        request: Request<etcd::DeleteRangeRequest>,
    ) -> Result<Response<etcd::DeleteRangeResponse>, Status> {
        let delete = convert::delete(request.into_inner());
        let done = self
            .shared
            .store
            .delete(delete)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(self.shared.delete_response(done)))
    }

    async fn txn(
        &self,
        request: Request<etcd::TxnRequest>,
    ) -> Result<Response<etcd::TxnResponse>, Status> {
        let txn = convert::txn(request.into_inner())?;
        let done = self
            .shared
            .store
            .txn(txn)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(self.shared.txn_response(done)))
    }

    async fn compact(
        &self,
        request: Request<etcd::CompactionRequest>,
    ) -> Result<Response<etcd::CompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        self.shared
            .store
            .compact(revision)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(etcd::CompactionResponse {
            header: Some(self.shared.current_header().await?),
        }))
    }
}
