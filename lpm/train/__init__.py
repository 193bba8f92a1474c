"""lpm.train."""
