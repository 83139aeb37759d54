#!/usr/bin/env bash
# Install the real protocol peers the tests run against, from Debian's packages, when missing:
# Mosquitto (the MQTT broker of the site link tests), socat (a second pseudo-terminal pair
# for the RTU meter tests) and systemd's systemd-analyze (tests/test_service.py verifies the
# shipped unit with it; it needs no running systemd). The tests never skip for want of them:
# if they cannot be installed here, this fails and says how to install them.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v systemd-analyze >/dev/null 2>&1 || [ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "ampshare: installing ${missing[*]} from Debian's packages" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else sudo=""; fi
fi
if command -v apt-get >/dev/null 2>&1 \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 \
         && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    exit 0
fi
echo "ampshare: cannot install ${missing[*]}; install them with:" >&2
echo "    sudo apt-get install ${missing[*]}" >&2
exit 1
