"""lpm.models."""
