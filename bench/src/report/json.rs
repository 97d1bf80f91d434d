//! The JSON report: every figure of every run, the machine, the versions.

use std::path::Path;

use anyhow::{Context, Result};

use super::Report;

pub fn write(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
