#!/usr/bin/env bash
# client.keygen.sh: a device key, certificate and keystores (docs/keygen.md).
#
# A thin wrapper: it sources keygen.properties with bash (so "$(hostname)" expands) and runs
# `nanoiot keygen client`, which does the work in Python (no keytool or openssl needed).
# Options: -p/--props FILE, -d/--dir DIR, --cn NAME, --ca, --provision, --force, -h/--help.
# server.keygen.sh is the same file but for the line `kind=...`.
set -euo pipefail

kind=client
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"

die() { echo "error: $*" >&2; exit 1; }

# `nanoiot` next to this script (installed in the same bin/), in the project's own .venv
# (this script in a checkout's conf/, after scripts/run or scripts/bootstrap), on PATH, or the
# package itself.
if [[ -x "$here/nanoiot" ]]; then
  nanoiot=("$here/nanoiot")
elif [[ -x "$here/../.venv/bin/nanoiot" ]]; then
  nanoiot=("$here/../.venv/bin/nanoiot")
elif command -v nanoiot >/dev/null 2>&1; then
  nanoiot=(nanoiot)
elif command -v python3 >/dev/null 2>&1 && python3 -c 'import nanoiot.cli' 2>/dev/null; then
  nanoiot=(python3 -c 'from nanoiot.cli import main; main()')
else
  die "the nanoiot command is not installed: run ./scripts/run (or scripts/bootstrap) in the NanoIoT folder first, or activate the virtualenv NanoIoT is installed in"
fi

props=""
args=()
while (($#)); do
  case "$1" in
    -p | --props)
      (($# >= 2)) || die "$1 needs a file name"
      props="$2"
      shift 2
      ;;
    --props=*) props="${1#*=}"; shift ;;
    -h | --help) exec "${nanoiot[@]}" keygen "$kind" --help ;;
    *) args+=("$1"); shift ;;
  esac
done

# The first of: -p FILE, ./keygen.properties, keygen.properties beside this script, the
# copy packaged with nanoiot.
if [[ -z "$props" ]]; then
  if [[ -f keygen.properties ]]; then
    props=keygen.properties
  elif [[ -f "$here/keygen.properties" ]]; then
    props="$here/keygen.properties"
  else
    props="$("${nanoiot[@]}" keygen default-properties)"
  fi
fi
[[ -f "$props" && -r "$props" ]] || die "cannot read properties file $props"

# Sourcing the file runs it as this user's code, and ./keygen.properties is picked up from
# wherever the script is run (/tmp too): refuse a file another user could have written.
# Group-writable is allowed (a umask of 002 makes every file so, for the user's own group).
where="$props"
[[ "$where" == /* ]] || where="./$where"
if [[ ! -O "$where" && -z "$(find "$where" -maxdepth 0 -user 0 2>/dev/null)" ]]; then
  die "$props belongs to another user: sourcing it would run their commands as you" \
    "(read it, copy it, and pass the copy with -p)"
fi
if [[ -n "$(find "$where" -maxdepth 0 -perm -0002 2>/dev/null)" ]]; then
  die "$props is writable by every user: sourcing it would run their commands as you" \
    "(chmod o-w $props)"
fi

# Minimal images may lack hostname(1); the file calls "$(hostname)".
if ! command -v hostname >/dev/null 2>&1; then
  hostname() { uname -n; }
fi

# The product text writes `CITY=San Francisco`, which bash would run as the command
# `Francisco` with CITY=San. Lines with an unquoted value that contains spaces but nothing
# bash treats specially (quotes, $, `, \) are quoted (a trailing ` # comment` dropped) before sourcing; so are Windows line
# ends dropped. Every other line reaches bash as written.
bash_safe() {
  local line key value
  local plain="^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=([^\"'\$\`\\#]*)([[:space:]]#.*)?$"
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    if [[ "$line" =~ $plain ]]; then
      key="${BASH_REMATCH[2]}"
      value="${BASH_REMATCH[3]}"
      value="${value#"${value%%[![:space:]]*}"}"
      value="${value%"${value##*[![:space:]]}"}"
      if [[ "$value" == *[[:space:]]* ]]; then
        printf '%s="%s"\n' "$key" "$value"
        continue
      fi
    fi
    printf '%s\n' "$line"
  done <"$1"
}

# Every assignment exported, so `nanoiot` gets bash's values (--values-from-env).
trap 'die "$props could not be sourced by bash (see the message above)"' ERR
set -a
# shellcheck source=/dev/null
source <(bash_safe "$props")
set +a
trap - ERR

exec "${nanoiot[@]}" keygen "$kind" --values-from-env --props "$props" ${args[@]+"${args[@]}"}
