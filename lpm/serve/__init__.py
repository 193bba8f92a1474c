"""lpm.serve."""
