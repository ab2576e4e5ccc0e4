#!/usr/bin/env bash
# Set up everything litefs needs on a Debian 12 machine, as root: apt packages, a venv in
# .venv with the project installed (editable). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
# Root runs it directly (sudo need not be installed); anyone else goes through sudo once.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: needs root: run it as root (sudo is not installed)" >&2; exit 1; }
  exec sudo -- "$0" "$@"
fi

APT_PACKAGES=(
  fuse3 libfuse3-dev pkg-config gcc python3-dev     # pyfuse3 builds against libfuse3
  fuse-overlayfs attr                              # benchmark baseline; getfattr/setfattr
  postgresql                                       # the PostgreSQL side of the test suite
  openssl                                          # classic rc.statelite client (s_client)
  openssh-server openssh-client rsync              # service nodes: prsync over ssh (tests: sshd)
  busybox-static cpio iproute2 util-linux kmod     # initramfs builder, namespace boots
  qemu-system-x86 linux-image-amd64                # the real-kernel boot test
  debootstrap                                      # bench_boot --debootstrap image
  git tar xz-utils
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.litefs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

# The README's commands (litefs, tabrestore, lslite, mountd, ...) are typed bare, so the venv's
# console scripts are linked into /usr/local/bin. Names come from pyproject.toml, so a new
# entry point is linked without editing this list; an existing non-link file is left alone.
for name in $(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"])'); do
  target="$PWD/.venv/bin/$name"
  link="/usr/local/bin/$name"
  if [ -x "$target" ] && { [ -L "$link" ] || [ ! -e "$link" ]; }; then
    ln -sfn "$target" "$link"
  fi
done

# Man pages and bash completion, generated from the commands' own parsers (litefs.tools.docgen)
# so they always match the installed options.
.venv/bin/python -m litefs.tools.docgen --man /usr/local/share/man/man1 \
  --bash /usr/local/share/bash-completion/completions/litefs
# bash-completion loads a file per command name; every command shares the one script.
for name in $(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"])'); do
  [ "$name" = litefs ] || ln -sfn litefs "/usr/local/share/bash-completion/completions/$name"
done
