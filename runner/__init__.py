"""Trajectory runner and data pipeline. Talks to the gateway only as an MCP client over HTTP."""
