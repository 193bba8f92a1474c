"""lpm.models.dit."""
