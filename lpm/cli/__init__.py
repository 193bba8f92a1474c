"""lpm.cli."""
