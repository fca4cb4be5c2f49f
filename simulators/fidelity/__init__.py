"""Call-level fidelity: how closely a simulated answer matches the live answer to the same call.

`metrics` holds plain functions on plain data (CallToolResult dicts, JSON-RPC error dicts), like
VCR.py's matchers; `aggregate` folds per-call scores into per-tool, per-server and overall figures;
`html` renders any report (this one and the runner's trajectory report) as one self-contained page.
"""
