#!/usr/bin/env bash
# Install hotfolder as a systemd service, or remove it. Idempotent: run it again after an
# upgrade, or after editing the config's [paths] (the units' writable folders follow them).
#
#   sudo deploy/install.sh                       install (or update) and start hotfolder.target
#   sudo deploy/install.sh uninstall             stop and remove it; config and data stay
#   sudo deploy/install.sh uninstall --purge     ... and the config, the data and the user
#                                                (asks first; --yes when not on a terminal)
#
# Settings, from the environment (defaults in brackets):
#   PREFIX [/opt/hotfolder]      the virtualenv (PREFIX/venv), a copy of the README, hooks/
#   CONFIG_DIR [/etc/hotfolder]  config.toml, written once and never overwritten
#   DATA_DIR [/var/lib/hotfolder]  input, output, state, archive and quarantine folders
#   SERVICE_USER [hotfolder]     the unprivileged user the services run as
#   UNIT_DIR [/etc/systemd/system]
#   BIN_DIR [/usr/local/bin]     the `hotfolder` command, which reads CONFIG_DIR's config
#   PYTHON [python3]             a Python >= 3.11 with venv
#   DESTDIR []                   a staging root: everything is written below it, and no user
#                                is created, nothing is chowned, systemctl is not run
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/hotfolder}
CONFIG_DIR=${CONFIG_DIR:-/etc/hotfolder}
DATA_DIR=${DATA_DIR:-/var/lib/hotfolder}
SERVICE_USER=${SERVICE_USER:-hotfolder}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
PYTHON=${PYTHON:-python3}
ROOT=${DESTDIR:-}
UNITS=(hotfolder-watch.service hotfolder-work.service hotfolder.target)
FOLDERS=(input output state archive quarantine)

say() { printf 'hotfolder-install: %s\n' "$*"; }
staging() { [[ -n "$ROOT" ]]; }

install_user() {
    staging && return 0
    id -u "$SERVICE_USER" >/dev/null 2>&1 && return 0
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER"
    say "created user $SERVICE_USER"
}

install_folders() {
    local folder
    for folder in "${FOLDERS[@]}"; do
        mkdir -p "$ROOT$DATA_DIR/$folder"
        # Group-writable and setgid: people (or an SMB share) in the group can drop files.
        chmod 2770 "$ROOT$DATA_DIR/$folder"
        staging || chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$DATA_DIR/$folder"
    done
}

source_stamp() {
    # What the virtualenv was built from; an unchanged source is not installed again.
    (cd "$SOURCE" && find pyproject.toml README.md watcher handlers -type f \
        \( -name '*.py' -o -name '*.toml' -o -name '*.md' \) -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_venv() {
    local venv=$ROOT$PREFIX/venv stamp
    stamp=$(source_stamp)
    mkdir -p "$ROOT$PREFIX"
    install -m 0644 "$SOURCE/README.md" "$ROOT$PREFIX/README.md"
    install -D -m 0755 "$SOURCE/deploy/hooks/index_chunks.py" "$ROOT$PREFIX/hooks/index_chunks.py"
    if [[ -f $venv/.hotfolder-source && $(cat "$venv/.hotfolder-source") == "$stamp" ]]; then
        return 0
    fi
    [[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
    "$venv/bin/python" -m pip install --quiet "$SOURCE" 2>&1 | { grep -v '^WARNING: Location' || true; }
    staging && relocate "$venv"
    echo "$stamp" >"$venv/.hotfolder-source"
    say "installed hotfolder into $PREFIX/venv"
}

check_python() {
    # Before anything is created: an old Python fails here, not half-way.
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "hotfolder-install: hotfolder needs Python 3.11 or newer; $PYTHON is" \
            "$("$PYTHON" --version 2>&1 || echo missing). Set PYTHON=/path/to/python3.11." >&2
        exit 1
    fi
}

relocate() {
    # A staged venv's scripts name the staging root in their first line; where the package
    # installs them, they must name PREFIX.
    local venv=$1 script
    for script in "$venv"/bin/*; do
        [[ -f $script && ! -L $script ]] || continue
        if head -n1 "$script" | grep -qF "#!$ROOT$PREFIX/"; then
            sed -i "1s|^#!$ROOT$PREFIX/|#!$PREFIX/|" "$script"
        fi
    done
    sed -i "s|$ROOT$PREFIX/venv|$PREFIX/venv|g" "$venv"/bin/activate*
}

install_completion() {
    # Shell completion, from the CLI's own parser.
    local bash_dir=$ROOT/usr/share/bash-completion/completions
    local zsh_dir=$ROOT/usr/local/share/zsh/site-functions
    mkdir -p "$bash_dir" "$zsh_dir"
    "$ROOT$PREFIX/venv/bin/python" -m watcher.cli --print-completion bash >"$bash_dir/hotfolder"
    "$ROOT$PREFIX/venv/bin/python" -m watcher.cli --print-completion zsh >"$zsh_dir/_hotfolder"
}

install_config() {
    local config=$ROOT$CONFIG_DIR/config.toml folder
    [[ -f $config ]] && return 0
    mkdir -p "$ROOT$CONFIG_DIR"
    local script=()
    for folder in "${FOLDERS[@]}"; do
        script+=(-e "s|^$folder = \"$folder\"|$folder = \"$DATA_DIR/$folder\"|")
    done
    sed "${script[@]}" "$SOURCE/config.toml" >"$config"
    chmod 0644 "$config"
    say "wrote $CONFIG_DIR/config.toml (edit it, then run this script again)"
}

configured_folders() {
    # The folders the config names, as the service will use them (one per line).
    "$ROOT$PREFIX/venv/bin/python" - "$ROOT$CONFIG_DIR/config.toml" <<'EOF'
import sys
from pathlib import Path

from watcher.settings import ConfigError, load_settings

try:
    settings = load_settings(Path(sys.argv[1]))
except ConfigError as exc:
    sys.exit(f"hotfolder-install: {exc}")
paths = settings.paths
for path in (paths.input, paths.output, paths.state, paths.archive, paths.quarantine):
    print(path)
print(settings.queue.backend)
# The watcher reaches the network for webhooks and a metrics endpoint.
print("yes" if settings.hooks.webhook or settings.metrics.listen else "no")
if settings.metrics.textfile:  # its folder must be writable under ProtectSystem=strict
    print(Path(settings.metrics.textfile).parent)
EOF
}

memory_max() {
    # For the workers' unit: 80% of the machine's RAM, in MiB.
    awk '/^MemTotal:/ { printf "%dM\n", $2 * 0.8 / 1024 }' /proc/meminfo
}

drop_in() {
    # drop_in UNIT NAME yes|no: install deploy/hotfolder-NAME.conf as UNIT.d/NAME.conf, or
    # remove it (and the folder, once empty).
    local unit=$1 name=$2 wanted=$3
    if [[ $wanted == yes ]]; then
        mkdir -p "$ROOT$UNIT_DIR/$unit.d"
        install -m 0644 "$SOURCE/deploy/hotfolder-$name.conf" "$ROOT$UNIT_DIR/$unit.d/$name.conf"
    else
        rm -f "$ROOT$UNIT_DIR/$unit.d/$name.conf"
        rmdir "$ROOT$UNIT_DIR/$unit.d" 2>/dev/null || true
    fi
}

install_units() {
    local folders state unit read_write backend network
    mapfile -t folders < <(configured_folders)
    backend=${folders[5]}
    network=${folders[6]}
    folders=("${folders[@]:0:5}" "${folders[@]:7}")
    state=${folders[2]}
    read_write=${folders[*]}
    mkdir -p "$ROOT$UNIT_DIR"
    for unit in "${UNITS[@]}"; do
        sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFIG@|$CONFIG_DIR/config.toml|g" \
            -e "s|@USER@|$SERVICE_USER|g" -e "s|@STATE@|$state|g" \
            -e "s|@READ_WRITE@|$read_write|g" -e "s|@MEMORY_MAX@|$(memory_max)|g" \
            "$SOURCE/deploy/$unit" >"$ROOT$UNIT_DIR/$unit.new"
        chmod 0644 "$ROOT$UNIT_DIR/$unit.new"
        mv "$ROOT$UNIT_DIR/$unit.new" "$ROOT$UNIT_DIR/$unit"
    done
    # The Redis queue needs the network; the SQLite one does not.
    local redis=no
    if [[ $backend == redis ]]; then redis=yes; fi
    drop_in hotfolder-watch.service redis "$redis"
    drop_in hotfolder-work.service redis "$redis"
    # Webhooks and a metrics endpoint: the watcher needs the network too.
    drop_in hotfolder-watch.service hooks "$network"
    # Folders configured outside DATA_DIR must exist for the units' ReadWritePaths=.
    for folder in "${folders[@]}"; do
        mkdir -p "$ROOT$folder"
        staging || chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$folder"
    done
}

start_units() {
    staging && return 0
    systemctl daemon-reload
    systemctl enable hotfolder.target hotfolder-watch.service hotfolder-work.service
    # Stopped, then started: new code and units, and never a process of the old version
    # beside one of the new (a restart of each unit may overlap). A first start just starts.
    systemctl stop hotfolder.target hotfolder-watch.service hotfolder-work.service
    systemctl start hotfolder.target hotfolder-watch.service hotfolder-work.service
    say "started hotfolder.target (systemctl status hotfolder-watch hotfolder-work)"
}

install_all() {
    check_python
    install_user
    install_folders
    install_venv
    install_command
    install_completion
    install_config
    install_units
    start_units
}

COMMAND_MARK="# hotfolder's command, written by deploy/install.sh"

install_command() {
    # `hotfolder status` for anyone on the machine, on the service's configuration.
    mkdir -p "$ROOT$BIN_DIR"
    local command=$ROOT$BIN_DIR/hotfolder
    if [[ -e $command ]] && ! grep -qF "$COMMAND_MARK" "$command"; then
        say "left $BIN_DIR/hotfolder alone: it is not ours"
        return 0
    fi
    printf '#!/bin/sh\n%s\nexport HOTFOLDER_CONFIG="${HOTFOLDER_CONFIG:-%s}"\nexec %s "$@"\n' \
        "$COMMAND_MARK" "$CONFIG_DIR/config.toml" "$PREFIX/venv/bin/hotfolder" >"$command.tmp"
    chmod 0755 "$command.tmp"
    if cmp -s "$command.tmp" "$command"; then
        rm -f "$command.tmp"  # unchanged: an update leaves it as it was
    else
        mv -f "$command.tmp" "$command"
    fi
}

confirm_purge() {
    # Everything in DATA_DIR goes: the inputs, the outputs, the archive. Ask a person;
    # a script says --yes.
    local answer files
    files=$(find "$ROOT$DATA_DIR" -type f 2>/dev/null | wc -l)
    if [[ ${1:-} == --yes ]]; then
        return 0
    fi
    if [[ ! -t 0 ]]; then
        echo "hotfolder-install: uninstall --purge deletes $files files in $DATA_DIR (every" \
            "input and output document) and $CONFIG_DIR; add --yes to do it without asking" >&2
        exit 2
    fi
    printf 'This deletes %s files in %s (every input and output document), %s and the user %s.\nType "purge" to go on: ' \
        "$files" "$DATA_DIR" "$CONFIG_DIR" "$SERVICE_USER"
    read -r answer
    if [[ $answer != purge ]]; then
        say "nothing removed"
        exit 1
    fi
}

uninstall_all() {
    local purge=${1:-} unit
    if [[ $purge == --purge ]]; then
        confirm_purge "${2:-}"
    elif [[ -n $purge ]]; then
        echo "usage: $0 uninstall [--purge [--yes]]" >&2
        exit 2
    fi
    if ! staging; then
        systemctl disable --now hotfolder.target hotfolder-watch.service \
            hotfolder-work.service 2>/dev/null || true
    fi
    for unit in "${UNITS[@]}"; do
        rm -f "$ROOT$UNIT_DIR/$unit"
        rm -rf "${ROOT:?}$UNIT_DIR/$unit.d"
    done
    staging || systemctl daemon-reload
    rm -rf "${ROOT:?}$PREFIX"
    if grep -qsF "$COMMAND_MARK" "$ROOT$BIN_DIR/hotfolder"; then
        rm -f "$ROOT$BIN_DIR/hotfolder"
    fi
    rm -f "$ROOT/usr/share/bash-completion/completions/hotfolder" \
        "$ROOT/usr/local/share/zsh/site-functions/_hotfolder"
    say "removed the units, $BIN_DIR/hotfolder and $PREFIX"
    if [[ $purge == --purge ]]; then
        rm -rf "${ROOT:?}$DATA_DIR" "${ROOT:?}$CONFIG_DIR"
        staging || userdel "$SERVICE_USER" 2>/dev/null || true
        say "removed $DATA_DIR, $CONFIG_DIR and the user $SERVICE_USER"
    else
        say "kept $CONFIG_DIR and $DATA_DIR (uninstall --purge removes them)"
    fi
}

case ${1:-install} in
install) install_all ;;
uninstall) uninstall_all "${2:-}" "${3:-}" ;;
*)
    echo "usage: $0 [install | uninstall [--purge [--yes]]]" >&2
    exit 2
    ;;
esac
