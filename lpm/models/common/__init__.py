"""lpm.models.common."""
