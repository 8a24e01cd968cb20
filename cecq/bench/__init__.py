"""Benchmarks behind ``cecq bench``: retrieval quality under compression and pipeline performance.

Each submodule exposes ``add_parser(subparsers)``, registering one ``cecq bench <name>`` command.
"""
