"""Session-wide fixtures shared by the whole suite.

Expensive things (tiny models, a vLLM engine) are built once per session here.
"""
