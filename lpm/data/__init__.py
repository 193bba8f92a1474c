"""lpm.data."""
