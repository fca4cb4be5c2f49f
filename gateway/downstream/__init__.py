"""What clients see: MCP endpoints (the aggregate `/mcp` and one per server) built on the SDK's server."""
