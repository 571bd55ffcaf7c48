//! Contract test suites (placeholder).
