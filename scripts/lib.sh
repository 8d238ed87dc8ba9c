# Shared by scripts/run and scripts/test (sourced, not executed).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CONFIDANT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/confidant}"
# Reuse a target dir the machine kept; a fresh machine builds into it once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CACHE" "$CARGO_TARGET_DIR"

log() { printf '\n==> %s\n' "$*" >&2; }
