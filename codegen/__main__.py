"""`python -m codegen ...` is `itercode ...`.

The guard matters: vLLM spawns worker processes that re-import __main__.
"""
import sys

from codegen.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
