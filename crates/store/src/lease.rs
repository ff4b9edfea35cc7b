//! Lease handle. (being written)
