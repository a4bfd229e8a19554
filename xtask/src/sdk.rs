//! Build and test steps of the sdk tier.

use anyhow::Result;

use crate::Ctx;

/// Builds the sdk artifacts.
pub fn build(_ctx: &Ctx) -> Result<()> {
    Ok(())
}

/// Runs the sdk test suites.
pub fn test(_ctx: &Ctx) -> Result<()> {
    Ok(())
}
