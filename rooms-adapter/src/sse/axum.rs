//! axum SSE transport (placeholder; built in the SSE issue).
