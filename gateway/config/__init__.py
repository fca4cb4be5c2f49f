"""Gateway configuration: pydantic models and the YAML/JSON loader."""

from simgate.gateway.config.loader import load_config, parse_config
from simgate.gateway.config.models import GatewayConfig, GatewaySettings, ServerConfig, ToolFilter

__all__ = ["GatewayConfig", "GatewaySettings", "ServerConfig", "ToolFilter", "load_config", "parse_config"]
