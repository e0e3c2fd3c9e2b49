"""Servers: models behind HTTP endpoints (``openai_server``: an OpenAI-compatible chat endpoint)."""
