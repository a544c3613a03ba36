#!/usr/bin/env bash
set -euo pipefail
echo "not yet" >&2; exit 1
