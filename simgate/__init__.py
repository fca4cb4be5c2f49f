"""simgate: the one import namespace of the project, and its base layer.

The layers are the repository's top-level folders; this package links each of them in (`simgate/gateway`
→ `../gateway`, and so for `runner`, `simulators`, `sandboxes`), so code, tests and an installed wheel all
name them `simgate.gateway`, `simgate.runner`, ... and `pip install simgate` adds one top-level name.

The modules directly here are the base layer (runner → gateway → simulators → sandboxes → here): only things
with no home in a layer of their own — the error base, atomic files, canonical JSON and its digest, the HTML
report shell. They import nothing of the project, and nothing heavy.
"""
