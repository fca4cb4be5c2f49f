"""Trajectory-level fidelity: the same tasks run in several modes, compared (metrics.py, report.py)."""
