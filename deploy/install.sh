#!/usr/bin/env bash
# Install ampshare on a Raspberry Pi (Raspberry Pi OS, Debian 12 bookworm / 13 trixie) as the
# systemd service deploy/ampshare.service:
#   /opt/ampshare/venv                      a venv with ampshare[pi] from a wheel
#   /etc/systemd/system/ampshare.service    the unit (replaced on every run)
#   /etc/ampshare/station.yaml              from deploy/station.template.yaml, only if absent
#   /boot/firmware/config.txt               the lines the hardware needs, only if confirmed
# then systemctl daemon-reload and enable (start only with --start). Safe to run again: the venv
# is reused, the installed config is never overwritten, config.txt lines are added only when
# missing. --dry-run prints every action and changes nothing; --root DIR installs into DIR as
# if it were / (how tests/test_service.py runs it).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/install.sh [--wheel FILE] [--yes] [--start] [--dry-run] [--root DIR]
                         [--python PY] [--pip-args "ARGS"]

  --wheel FILE     install this wheel (default: build one from the checkout this script is in,
                   which needs the network for its build dependencies)
  --yes            edit the boot config.txt without asking
  --start          (re)start the service once installed (default: enable only)
  --dry-run        print every action, change nothing
  --root DIR       install into DIR as if it were / (staging, tests). The venv works only where
                   it was made (DIR included): for a Pi's SD card, run this on the Pi
  --python PY      the Python (>= 3.11) the venv is made with (default: python3)
  --pip-args ARGS  extra options for pip, split on spaces; e.g. --pip-args "--no-index
                   --find-links /media/usb/wheels" to install offline from a folder of wheels
EOF
}

say() { printf 'ampshare install: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
# Every change goes through run: printed (shell-quoted), and done unless --dry-run.
run() {
    printf '  +' >&2
    printf ' %q' "$@" >&2
    printf '\n' >&2
    if ! $dry_run; then "$@"; fi
}

args=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"
wheel=""
root=""
yes=false
start=false
dry_run=false
python="python3"
pip_args_str=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel | --root | --python | --pip-args)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --wheel) wheel="$2" ;;
                --root) root="$2" ;;
                --python) python="$2" ;;
                --pip-args) pip_args_str="$2" ;;
            esac
            shift 2
            ;;
        --yes | -y) yes=true && shift ;;
        --start) start=true && shift ;;
        --dry-run | -n) dry_run=true && shift ;;
        -h | --help) usage && exit 0 ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done
read -r -a pip_args <<<"$pip_args_str"

# --- where things go ---------------------------------------------------------------------
# R prefixes every path written; the paths the installed system sees (the unit's ExecStart,
# what is printed for people) stay the plain ones.
R=""
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root: no such directory"
    R="$(cd "$root" && pwd)"
    [ "$R" != "/" ] || R=""
fi
venv=/opt/ampshare/venv
unit=/etc/systemd/system/ampshare.service
confdir=/etc/ampshare
conf=$confdir/station.yaml
# pip in a venv made by root: no prompts, no nagging about its own version or about root.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

$dry_run && say "dry run: nothing is changed"
# Everything that can be refused is refused before anything is changed.
if [ -n "$wheel" ]; then
    [ -f "$wheel" ] || die "--wheel $wheel: no such file"
    case "$wheel" in *.whl) ;; *) die "--wheel $wheel: not a .whl file" ;; esac
    wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
else
    [ -f "$checkout/pyproject.toml" ] || die "no --wheel and no checkout at $checkout to build one"
fi
if [ -z "$R" ] && ! $dry_run && [ "$(id -u)" -ne 0 ]; then
    die "installing into /opt and /etc needs root: sudo $0 ${args[*]}"
fi

# --- Python ------------------------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || die "no $python (install Debian's python3)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11 (Debian 12 bookworm or later has 3.11)"
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian ships venv's pip bootstrap separately.
    if [ -z "$R" ] && command -v apt-get >/dev/null 2>&1; then
        run apt-get install -y python3-venv
    else
        die "$python cannot make a venv with pip: install python3-venv (apt-get install python3-venv)"
    fi
fi

# --- the venv ----------------------------------------------------------------------------
version='import sys; print("%d.%d" % sys.version_info[:2])'
want="$("$python" -c "$version")"
have="$("$R$venv/bin/python" -c "$version" 2>/dev/null || true)"
if [ "$have" = "$want" ]; then
    say "reusing the venv $venv (Python $have)"
elif [ -e "$R$venv" ]; then
    # Made by another Python (Debian 12 -> 13 upgrades 3.11 to 3.13): its packages are in the
    # old Python's folder, so it is made again.
    say "the venv $venv is for Python ${have:-unknown}, not $want: making it again"
    run "$python" -m venv --clear "$R$venv"
else
    run "$python" -m venv "$R$venv"
fi
vpython="$R$venv/bin/python"

# --- the wheel ---------------------------------------------------------------------------
tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

# The build writes build/ and *.egg-info where it builds: a copy keeps the checkout clean.
copy_source() {
    mkdir -p "$2"
    tar -C "$1" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' -cf - . \
        | tar -C "$2" -xf -
}

if [ -z "$wheel" ]; then
    say "building a wheel from $checkout"
    if $dry_run; then
        tmp_shown="/tmp/tmp.XXXXXXXXXX" # what mktemp -d would make
        run copy_source "$checkout" "$tmp_shown/src"
        run "$vpython" -m pip wheel --no-deps "${pip_args[@]}" -w "$tmp_shown/dist" "$tmp_shown/src"
        wheel="$tmp_shown/dist/ampshare-VERSION-py3-none-any.whl"
    else
        tmp="$(mktemp -d)"
        run copy_source "$checkout" "$tmp/src"
        run "$vpython" -m pip wheel --no-deps "${pip_args[@]}" -w "$tmp/dist" "$tmp/src"
        wheels=("$tmp"/dist/ampshare-*.whl)
        [ -f "${wheels[0]}" ] || die "the build made no ampshare wheel"
        wheel="${wheels[0]}"
    fi
fi

# --- ampshare[pi] into the venv ----------------------------------------------------------
say "installing $(basename "$wheel") with the pi extra into $venv"
run "$vpython" -m pip install "${pip_args[@]}" "${wheel}[pi]"
# Again without dependencies, forced: a rebuilt wheel of the same version replaces the old.
run "$vpython" -m pip install "${pip_args[@]}" --no-deps --force-reinstall "$wheel"

# --- the unit and the config -------------------------------------------------------------
run install -D -m 0644 "$here/ampshare.service" "$R$unit"
run install -d -m 0755 "$R$confdir"
if [ -e "$R$conf" ]; then
    say "keeping the existing $conf"
else
    run install -m 0644 "$here/station.template.yaml" "$R$conf"
    say "$conf is a template: make it say what is installed"
fi
if $dry_run; then
    run "$R$venv/bin/ampshare" config check "$R$conf"
elif ! run "$R$venv/bin/ampshare" config check "$R$conf" >/dev/null; then
    die "$conf does not pass ampshare config check (above): fix it and run this again"
fi

# Raspberry Pi OS's groups for the devices (SupplementaryGroups= of the unit): without them
# the service does not start.
if [ -z "$R" ]; then
    for group in gpio spi dialout; do
        getent group "$group" >/dev/null \
            || say "warning: no group $group here (not Raspberry Pi OS?): the service will not start"
    done
fi

# --- the boot config ---------------------------------------------------------------------
# What the configured hardware needs of the firmware's config.txt. The GPIO backend: the two
# hardware PWM channels on GPIO 12 and 13 (Alt0; the overlays README's pwm-2chan entry; the
# same overlay on a Pi 5, where they are channels 0 and 1 of the RP1's PWM0) and SPI0 for the
# pilot ADC.
station_conf="$R$conf"
[ -e "$station_conf" ] || station_conf="$here/station.template.yaml"
hardware="$(sed -n 's/^hardware:[[:space:]]*["'\'']\{0,1\}\([^"'\'' #]*\).*/\1/p' "$station_conf" | head -n 1)"
lines=()
case "$hardware" in
    gpio://*) lines=("dtparam=spi=on" "dtoverlay=pwm-2chan,pin=12,func=4,pin2=13,func2=4") ;;
    serial://*)
        say "hardware $hardware: enable the Pi's UART if the board is on GPIO 14/15" \
            "(raspi-config: Interface Options, Serial Port: no login shell, hardware yes)"
        ;;
esac
bootcfg=""
if [ -d "$R/boot/firmware" ]; then
    bootcfg=/boot/firmware/config.txt # bookworm and later
elif [ -e "$R/boot/config.txt" ]; then
    bootcfg=/boot/config.txt # bullseye and earlier
fi
missing=()
if [ ${#lines[@]} -gt 0 ] && [ -n "$bootcfg" ] && [ -e "$R$bootcfg" ]; then
    for line in "${lines[@]}"; do
        grep -qxF "$line" "$R$bootcfg" || missing+=("$line")
    done
elif [ ${#lines[@]} -gt 0 ]; then
    say "no config.txt in ${R:-/}boot (not a Raspberry Pi?); its hardware needs:"
    printf '    %s\n' "${lines[@]}" >&2
fi

# Appended after an [all] filter: whatever section the file ends in ([cm5], [pi4]...), the
# lines then apply to every model. A copy is kept first: a Pi may not boot from a bad one.
append_boot_lines() {
    local file="$1"
    shift
    cp -p "$file" "$file.ampshare.bak"
    {
        printf '\n# ampshare (deploy/install.sh): the station hardware\n[all]\n'
        printf '%s\n' "$@"
    } >>"$file"
}

if [ ${#missing[@]} -gt 0 ]; then
    say "$bootcfg lacks these lines, which $hardware needs:"
    printf '    %s\n' "${missing[@]}" >&2
    edit=false
    if $dry_run; then
        edit=true # shown below, not done
    elif $yes; then
        edit=true
    elif [ -t 0 ]; then
        read -r -p "append them to $bootcfg? [y/N] " answer
        case "$answer" in [yY] | [yY][eE][sS]) edit=true ;; esac
    else
        say "no terminal to ask: run again with --yes to append them"
    fi
    if $edit; then
        run append_boot_lines "$R$bootcfg" "${missing[@]}"
        say "reboot for them to take effect"
    else
        say "$bootcfg not edited"
    fi
elif [ ${#lines[@]} -gt 0 ] && [ -n "$bootcfg" ] && [ -e "$R$bootcfg" ]; then
    say "$bootcfg has every line the hardware needs"
fi

# --- systemd -----------------------------------------------------------------------------
if [ -n "$R" ]; then
    # Offline: the [Install] symlinks are made in DIR; nothing is running there to reload.
    run systemctl --root="$R" enable ampshare.service
    $start && say "--start ignored with --root"
elif [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
    run systemctl enable ampshare.service
    if $start; then
        run systemctl restart ampshare.service
    elif systemctl is-active --quiet ampshare.service; then
        say "the service runs the version installed before: systemctl restart ampshare"
    else
        say "start it with: systemctl start ampshare (or reboot)"
    fi
else
    # A chroot or a container: enabled for its next boot.
    run systemctl enable ampshare.service
    $start && say "--start ignored: systemd is not running here"
fi
say "done$($dry_run && printf ' (dry run: nothing was changed)')"
