//! The Nexus browser SDK core (see sdk-wasm/README.md).
