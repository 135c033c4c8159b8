# Shared setup for scripts/demo and scripts/test: source it, don't run it.
#
# Leaves the shell in the repository root with .venv/bin first on PATH and the project installed
# editable with its test extras (with LOGSHIP_SETUP=runtime, as scripts/demo sets it: the runtime only,
# and no system tools). Idempotent: when .venv/.logship-installed is newer than
# pyproject.toml it only checks, and takes well under a second.
# As root it also installs what the tests use from the system (rsync, iproute2, postgresql, mariadb-server, chromium) when missing;
# without root or apt-get it warns and goes on.

LOGSHIP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$LOGSHIP_ROOT"

_setup_say() { echo "setup: $*" >&2; }

_setup_apt_updated=0
# Install Debian packages; warn instead of failing when that is not possible here.
_setup_apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        _setup_say "warning: cannot install $* (needs root and apt-get); some tests may be skipped"
        return 0
    fi
    _setup_say "installing $* with apt-get"
    if [ "$_setup_apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || _setup_say "warning: apt-get update failed"
        _setup_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || _setup_say "warning: apt-get install $* failed; some tests may be skipped"
}

# The first interpreter that is Python >= 3.11.
_setup_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

# LOGSHIP_SETUP=runtime (scripts/demo) installs the runtime only: no test or bench extras and no system
# tools; the default (scripts/test) installs everything the tests use.
_setup_mode="${LOGSHIP_SETUP:-test}"

_setup_venv() {
    local stamp=.venv/.logship-installed
    local spec=".[test,bench]" what="logship and its test extras"
    if [ "$_setup_mode" = runtime ]; then
        # A venv set up for the tests has the runtime too.
        if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -x .venv/bin/python ]; then
            return 0
        fi
        stamp=.venv/.logship-installed-runtime spec="." what="logship (runtime only)"
    fi
    if [ ! -x .venv/bin/python ]; then
        local py
        py="$(_setup_python)" || { _setup_say "error: need Python >= 3.11"; return 1; }
        # Debian splits venv/ensurepip into python3-venv.
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            _setup_apt_install python3-venv
        fi
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            _setup_apt_install "python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        fi
        _setup_say "creating .venv with $py"
        "$py" -m venv .venv || { _setup_say "error: $py -m venv failed"; return 1; }
        rm -f "$stamp"
    fi
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
        return 0
    fi
    _setup_say "installing $what into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip || _setup_say "warning: pip upgrade failed"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" \
        || { _setup_say "error: pip install -e '$spec' failed"; return 1; }
    touch "$stamp"
}

_setup_tools() {
    local missing=()
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    { command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1; } || missing+=(iproute2)
    # The PostgreSQL standby tests need a server (initdb, pg_ctl, pg_basebackup) and psql.
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || ! command -v psql >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    # The MariaDB binlog tests start their own mariadbd and replay with mariadb-binlog | mariadb.
    { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } && command -v mariadb-binlog >/dev/null 2>&1 \
        || missing+=(mariadb-server mariadb-client)
    command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
    # The status page test renders the admin page in a real headless browser.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # The failover tests start their own 3-member etcd (the witness).
    command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        _setup_apt_install "${missing[@]}"
    fi
}

[ "$_setup_mode" = runtime ] || _setup_tools
_setup_venv || return 1 2>/dev/null || exit 1
export VIRTUAL_ENV="$LOGSHIP_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
unset PYTHONHOME
