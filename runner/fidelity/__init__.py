"""Trajectory-level fidelity: metrics on whole trajectories across modes, and their report."""
