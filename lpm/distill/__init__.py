"""lpm.distill."""
