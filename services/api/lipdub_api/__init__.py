"""The lipdub HTTP API (FastAPI)."""
