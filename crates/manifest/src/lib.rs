//! drover-manifest (being written)
