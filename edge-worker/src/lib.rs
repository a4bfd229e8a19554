//! The Nexus edge collector (see edge-worker/README.md).
