"""Executors answer a call; all share the interface `async (ToolCall) -> CallToolResult dict`."""
