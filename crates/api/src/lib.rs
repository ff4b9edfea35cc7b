//! drover-api (being written)
