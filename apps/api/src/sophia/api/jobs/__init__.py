"""HTTP for background jobs."""
