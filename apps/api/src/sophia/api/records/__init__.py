"""The catalog's records over HTTP."""
