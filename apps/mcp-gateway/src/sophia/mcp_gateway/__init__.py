"""Sophia's MCP gateway: one Streamable HTTP endpoint where AI agents find Sophia's own tools
(records, search, deals, analytics) beside the tools of upstream MCP servers, with Sophia's keys,
limits, breakers and metrics."""
