//! Build and test steps of the edge tier.

use anyhow::Result;

use crate::Ctx;

/// Builds the edge artifacts.
pub fn build(_ctx: &Ctx) -> Result<()> {
    Ok(())
}

/// Runs the edge test suites.
pub fn test(_ctx: &Ctx) -> Result<()> {
    Ok(())
}
