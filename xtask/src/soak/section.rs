//! The `## Soak` section of BENCHMARKS.md.

use std::path::Path;

pub(super) const SECTION: &str = "## Soak";

/// Replaces the `## Soak` section of `path` (up to the next `## ` heading or
/// the end) with `report`, or appends one; keeps everything else.
pub(super) fn write_section(path: &Path, report: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = replace_section(&existing, report);
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub(super) fn replace_section(existing: &str, report: &str) -> String {
    let section = format!(
        "{SECTION}\n\nWritten by `cargo xtask soak` (a full run replaces this section only).\n\n\
         {}\n",
        report.trim_end()
    );
    let start = if existing.starts_with(&format!("{SECTION}\n")) {
        Some(0)
    } else {
        existing.find(&format!("\n{SECTION}\n")).map(|at| at + 1)
    };
    match start {
        Some(start) => {
            let after = start + SECTION.len();
            let end = existing[after..]
                .find("\n## ")
                .map_or(existing.len(), |at| after + at + 1);
            let rest = &existing[end..];
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &existing[..start])
        }
        None => {
            let mut text = existing.trim_end().to_owned();
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&section);
            text
        }
    }
}
