"""lpm.inference."""
