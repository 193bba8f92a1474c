"""lpm.parallel."""
