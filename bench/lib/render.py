"""Renders a topology template of bench/topology/: ${NAME} is replaced by
the environment variable NAME, and a name the environment lacks is an error
that names it.

    python3 bench/lib/render.py bench/topology/two-regions.toml
"""
import os
import string
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        try:
            sys.stdout.write(string.Template(f.read()).substitute(os.environ) + "\n")
        except KeyError as e:
            sys.exit(f"render: {path} needs {e.args[0]} in the environment")
