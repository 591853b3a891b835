#!/bin/sh
# The Debian/Ubuntu packages `make test` needs beyond Python, installed when this machine allows:
# as root, or with password-less sudo. Otherwise it stops at once and prints the exact command.
#   g++, g++-aarch64-linux-gnu, cmake: TVM modules and the C++ runner, native and cross-compiled
#   qemu-user-static, debootstrap, debian-archive-keyring: the emulated aarch64 board
#   openssh-server, openssh-client: `qmtgan flash` is tested against an sshd on 127.0.0.1
#   util-linux (unshare): the emulated board's private /proc/cpuinfo and the full-disk tests
set -eu
PACKAGES="${QMTGAN_SYSTEM_PACKAGES:-make python3-venv g++ g++-aarch64-linux-gnu cmake qemu-user-static debootstrap
debian-archive-keyring openssh-server openssh-client util-linux}"

if ! command -v dpkg >/dev/null 2>&1; then
  echo "system packages: no dpkg here; install the equivalents of: $(echo $PACKAGES)" >&2
  exit 1
fi
missing=""
for pkg in $PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

install="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$missing"
if [ "$(id -u)" -eq 0 ]; then
  echo "system packages: installing$missing"
  sh -c "$install"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  echo "system packages: installing$missing (sudo)"
  sudo sh -c "$install"
else
  echo "system packages missing:$missing" >&2
  echo "install them with:  sudo sh -c '$install'   (or run: sudo make deps)" >&2
  exit 1
fi
