"""Tool simulators and call-level fidelity metrics. Works on plain data; never imports `gateway`."""
