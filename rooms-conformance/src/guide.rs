//! Write your own adapter (placeholder).
