"""The local platform: real wire-compatible backing servers as native processes.

Used by `make dev` (cli.py) and by the pytest plugin (pytest_plugin.py), so tests and the local
stack start servers the same way.
"""
