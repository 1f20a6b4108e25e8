"""The application layer: the `itercode` CLI and its commands, the server, the demo.

The only layer that may import `rerankers` and `loops`; the flow runs one way,
codegen.app > loops > rerankers > core codegen > sandbox (pyproject.toml's
import-linter contracts hold it to that).
"""
