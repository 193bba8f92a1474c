"""lpm.bench."""
