"""simgate's MCP gateway: config, upstream pool, call pipeline, downstream endpoints and the HTTP app."""
