"""lpm.data.prep."""
