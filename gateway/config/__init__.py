"""Gateway configuration: pydantic models and the YAML/JSON loader."""

from gateway.config.loader import load_config, parse_config
from gateway.config.models import GatewayConfig, GatewaySettings, ServerConfig, ToolFilter

__all__ = ["GatewayConfig", "GatewaySettings", "ServerConfig", "ToolFilter", "load_config", "parse_config"]
