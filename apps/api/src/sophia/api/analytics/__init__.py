"""Sales analytics: pipeline, win rate, velocity, cohorts and the funnel, from the summaries the
analytics consumer keeps (`sophia.database.analytics`)."""
