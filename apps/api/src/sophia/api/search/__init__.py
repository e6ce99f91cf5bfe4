"""HTTP for search over the enriched catalog."""
