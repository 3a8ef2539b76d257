//! Deployment config: every mistake reported with file, line and key; exit codes.
