"""Per-subject BOLD reference (read, motion-corrected and masked once)."""
