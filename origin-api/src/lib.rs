//! The Nexus origin service.
