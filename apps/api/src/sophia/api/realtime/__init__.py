"""Tokens for the real-time service's WebSocket (browsers cannot send a key in its handshake)."""
