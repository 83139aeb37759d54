"""The `ampshare` command line (placeholder until the spine lands)."""


def main() -> int:
    return 0
