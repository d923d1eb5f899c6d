//! The chart's own RBAC on a real API server (placeholder).
