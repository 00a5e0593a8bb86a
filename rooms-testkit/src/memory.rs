//! Memory harness (filled in next).
