"""``ampshare keygen FILE``: make a site key file for signed link messages.

One job: write a fresh random site key (``firmware.link.auth``) to a new file that only its
owner can read, refusing to overwrite one. ``--keep OLD`` also copies the keys of an existing
key file after the new one, for a rotation (the new key signs; the old ones still verify until
every station has the new file: docs/mqtt.md, "Keys"). Prints the key id. Exit 2 on a file
that exists or cannot be written, or an unreadable ``--keep`` file.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    parser = sub.add_parser(
        "keygen",
        help="make a site key file (signs the link's limit and telemetry messages)",
        description="Write a new random site key to FILE (mode 600; never overwrites).",
    )
    parser.add_argument("file", help="the key file to create")
    parser.add_argument(
        "--keep", metavar="OLD", help="also keep the keys of OLD (to verify while rotating)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from firmware.link.auth import KeyFileError, generate_key_file, load_keyring

    keep: tuple[bytes, ...] = ()
    if args.keep is not None:
        try:
            keep = load_keyring(args.keep).keys
        except KeyFileError as exc:
            print(f"ampshare keygen: --keep: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        ring = generate_key_file(args.file, keys=keep)
    except FileExistsError:
        print(f"ampshare keygen: {args.file} exists (never overwritten)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"ampshare keygen: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{args.file}: site key {ring.kid}"
        + (f" (also verifies {', '.join(ring.kids[1:])})" if keep else "")
    )
    return EXIT_OK
