"""`selfmoa models`: list the embedded local models."""

from __future__ import annotations

import argparse
import json


def models_command(args: argparse.Namespace) -> int:
    """`selfmoa models`: the embedded models, whether installed, size and path."""
    from selfmoa.local import list_local_models

    rows = list_local_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        names = ", ".join([row["name"], *row["aliases"]])
        state = "installed" if row["installed"] else f"not installed: {row['install']}"
        where = row["path"] or "not joined yet (joined on first use)"
        print(f"{names}\n  {row['description']} ({row['licence']}), {row['size'] / 1e6:.0f} MB, {state}\n  {where}")
    return 0


__all__ = ["models_command"]
