//! drover-labels (being written)
