#!/bin/sh
# Install digestd as a systemd service on Debian 12+ or Ubuntu 22.04+ (deploy/README.md).
#
#   sudo apt-get install -y python3 python3-venv
#   sudo deploy/install.sh                      # from this checkout
#   sudo deploy/install.sh digestd-*.whl        # or from a wheel (pip wheel --no-deps .)
#
# Run it again to upgrade: the virtualenv is updated in place and an existing
# /etc/digestd/digestd.env is left as it is.
#
# DESTDIR=/some/root stages everything under that root instead (for a package, or a test):
# then no user is created, no file is given to it, and systemd is not told.
# PREFIX (default /opt/digestd) is where the virtualenv goes; the unit names its binary.
# PYTHON (default python3) is the interpreter the virtualenv is made from (3.11 or later).
# pip reads its own PIP_* variables, e.g. PIP_INDEX_URL for a mirror.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source=${1:-$(dirname "$here")}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/digestd}
PYTHON=${PYTHON:-python3}
venv="$DESTDIR$PREFIX"

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or set DESTDIR to stage the files elsewhere" >&2
    exit 2
fi

# 1. The system user the service runs as (no login, no home: systemd makes
#    /var/lib/digestd for it, from the unit's StateDirectory=).
if [ -z "$DESTDIR" ] && ! getent passwd digestd >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/digestd --no-create-home \
        --shell /usr/sbin/nologin digestd
fi

# 2. digestd and its libraries in a virtualenv of their own.
if ! "$PYTHON" -m venv "$venv"; then
    echo "install.sh: could not make a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)" >&2
    exit 1
fi
"$venv/bin/pip" install --quiet --upgrade "$source"

# 3. The settings: readable by the service's group, never overwritten once there.
env_file="$DESTDIR/etc/digestd/digestd.env"
if [ ! -e "$env_file" ]; then
    if [ -z "$DESTDIR" ]; then
        install -D -m 0640 -o root -g digestd "$here/digestd.env.example" "$env_file"
    else
        install -D -m 0640 "$here/digestd.env.example" "$env_file"
    fi
fi

# 4. The unit, pointing at this virtualenv's digestd.
unit="$DESTDIR/etc/systemd/system/digestd.service"
mkdir -p "$(dirname "$unit")"
sed "s|/opt/digestd/|$PREFIX/|g" "$here/digestd.service" >"$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"

if [ -z "$DESTDIR" ]; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    echo "$("$venv/bin/digestd" --version) installed in $PREFIX."
    echo "Next: edit /etc/digestd/digestd.env, then: systemctl enable --now digestd"
fi
