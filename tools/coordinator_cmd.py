"""ampshare coordinator: site power sharing over MQTT (issue 7)"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    del sub  # not built yet


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
