"""The bodies of the `selfmoa` commands, one module each.

The parser and `main` live in `selfmoa.cli`; the body of `selfmoa eval` in `selfmoa.evals.cli`.
"""
