//! drover-health (being written)
