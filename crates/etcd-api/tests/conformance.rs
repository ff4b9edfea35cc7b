//! The store conformance suite a third time: `drover-store-etcd` (the etcd
//! client Drover's processes use) talking to this crate's server over a
//! loopback connection, with the embedded store behind it. Every case must
//! hold through the wire exactly as on the embedded store and on etcd.
drover_store::conformance_tests! {
    time = real,
    setup = {
        let server = drover_etcd_api::testing::TestServer::start(
            drover_store::embedded::EmbeddedStore::in_memory(),
            drover_etcd_api::EtcdApiConfig::default(),
        )
        .await
        .expect("serving the etcd API on loopback");
        let store = drover_store_etcd::EtcdStore::connect(
            [server.endpoint()],
            drover_store_etcd::EtcdConfig::default(),
        )
        .await
        .expect("connecting to the in-process etcd API");
        (store, server)
    },
}
