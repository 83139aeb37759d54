"""Argument types shared by the ``ampshare`` subcommands."""

from __future__ import annotations

import argparse


def duration(text: str) -> float:
    """A duration option (``30s``, ``1h30m``, ``1d`` or plain seconds) in seconds."""
    from hal.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
