"""Trajectories into the formats training pipelines read: TOUCAN's dataset columns and ShareGPT."""
