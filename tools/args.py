"""Argument types shared by the ``ampshare`` subcommands."""

from __future__ import annotations

import argparse


def duration(text: str) -> float:
    """A duration option (``30s``, ``5m``, ``2h`` or plain seconds) in seconds."""
    from hal.yamlnodes import ConfigError, parse_duration

    try:
        return parse_duration(text)
    except (ConfigError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
