#!/usr/bin/env bash
# Set up everything litefs needs on a Debian 12 machine, as root: apt packages, a venv in
# .venv with the project installed (editable). Idempotent: a second run only checks.
set -euo pipefail
. "$(dirname "$0")/asroot.sh"   # root, or once through sudo
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  fuse3 libfuse3-dev pkg-config gcc python3-dev     # pyfuse3 builds against libfuse3
  python3-venv                                     # the .venv, made by Debian's python3
  fuse-overlayfs attr                              # benchmark baseline; getfattr/setfattr
  postgresql                                       # the PostgreSQL side of the test suite
  openssl                                          # classic rc.statelite client (s_client)
  openssh-server openssh-client rsync              # service nodes: prsync over ssh (tests: sshd)
  busybox-static cpio iproute2 util-linux kmod     # initramfs builder, namespace boots
  qemu-system-x86 linux-image-amd64                # the real-kernel boot test
  nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils  # netboot test: a real NFS server (+ nfs-ls)
  dracut dracut-network isc-dhcp-client zstd        # netboot test: the initrd made by dracut
  debootstrap                                      # bench_boot --debootstrap image
  git tar xz-utils
  sudo zsh systemd-container                       # sudo-user path, zsh completion, mountd unit under systemd-nspawn
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

# Debian's own interpreter by default: the venv then works under the mountd unit, whose
# ProtectHome= hides an interpreter kept under /root or /home (pyenv and the like).
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=${PYTHON:-python3}; fi
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

# Man pages and bash and zsh completion, generated from the commands' own parsers
# (litefs.tools.docgen) so they always match the installed options. zsh reads
# /usr/local/share/zsh/site-functions by default; bash-completion its completions/ folder.
.venv/bin/python -m litefs.tools.docgen --man /usr/local/share/man/man1 \
  --bash /usr/local/share/bash-completion/completions/litefs \
  --zsh /usr/local/share/zsh/site-functions/_litefs
# bash-completion loads a file per command name; every command shares the one script.
for name in $(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"])'); do
  [ "$name" = litefs ] || ln -sfn litefs "/usr/local/share/bash-completion/completions/$name"
done
