//! drover-election (being written)
