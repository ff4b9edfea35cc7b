//! The conformance suite against the embedded backend, in memory and durable
//! in a temporary directory, with paused tokio time.

mod in_memory {
    drover_store::conformance_tests! {
        time = paused,
        store = drover_store::embedded::EmbeddedStore::in_memory(),
    }
}

mod durable {
    drover_store::conformance_tests! {
        time = paused,
        setup = {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = drover_store::embedded::EmbeddedStore::open(dir.path(), Default::default())
                .await
                .expect("open the embedded store");
            (store, dir)
        },
    }
}

/// The metrics wrapper changes no behaviour: the whole suite through it.
mod metered {
    drover_store::conformance_tests! {
        time = paused,
        store = drover_store::metered::Metered::new(
            drover_store::embedded::EmbeddedStore::in_memory(),
            &drover_metrics::MetricsRegistry::new(),
        ),
    }
}
