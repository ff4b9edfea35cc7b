//! Typed key layout. (being written)
