"""simgate's base layer: what every package may import (runner → gateway → simulators → sandboxes → here).

Only things with no home in a layer of their own: the error base, atomic files, canonical JSON and its
digest, the HTML report shell. It imports nothing of the project, and nothing heavy.
"""
