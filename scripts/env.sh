#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent).
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.ampshare-installed"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "ampshare: creating virtual environment in .venv" >&2
    "$python" -m venv "$venv"
fi
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "ampshare: installing ampshare and its dependencies into .venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
    echo "$want" > "$stamp"
fi
