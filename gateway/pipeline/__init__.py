"""The call pipeline: a `ToolCall` passes through small stages that share one interface."""

from simgate.gateway.pipeline.call import CallNext, Pipeline, Stage, ToolCall

__all__ = ["CallNext", "Pipeline", "Stage", "ToolCall"]
