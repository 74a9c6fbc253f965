# Sourced by the dist_* and slurm_* scripts.
#
# PYTHON: the interpreter to run the tools with: $PYTHON if set, else the
# repository's .venv/bin/python (made by tools/setup_env.sh) if it exists,
# else python on PATH.
if [ -z "${PYTHON:-}" ]; then
    PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
    [ -x "$PYTHON" ] || PYTHON=python
fi

# check_usage MIN_ARGS USAGE "$@": prints USAGE and exits for -h/--help
# (status 0) and for fewer than MIN_ARGS arguments (status 2).
check_usage() {
    local min=$1 usage=$2
    shift 2
    case "${1:-}" in
        -h | --help) echo "usage: $usage"; exit 0 ;;
    esac
    if [ $# -lt "$min" ]; then
        echo "usage: $usage" >&2
        exit 2
    fi
}
