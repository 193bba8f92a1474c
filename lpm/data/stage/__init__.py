"""lpm.data.stage."""
