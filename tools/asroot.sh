# Sourced first by every set-up script: root runs on (sudo need not be installed, as on a
# minimal Debian); anyone else re-runs the same script once through sudo, same arguments.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: needs root: run it as root (sudo is not installed)" >&2; exit 1; }
  exec sudo -- "$0" "$@"
fi
