"""HTTP for the ML models: embeddings (Sophia's and OpenAI's shapes)."""
