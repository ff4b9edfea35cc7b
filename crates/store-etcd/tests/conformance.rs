//! The shared store conformance suite against a real etcd
//! (`DROVER_ETCD_ENDPOINTS`; skipped with a message when unset).
drover_store::conformance_tests! {
    time = real,
    setup = {
        let Some(endpoints) = drover_store::testing::etcd_endpoints() else { return };
        let config = drover_store_etcd::EtcdConfig::default();
        (drover_store_etcd::EtcdStore::connect(endpoints, config).await.expect("connect to etcd"), ())
    },
}
