"""Visual QC reports (per subject and group)."""
