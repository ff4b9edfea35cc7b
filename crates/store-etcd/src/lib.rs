//! drover-store-etcd (being written)
