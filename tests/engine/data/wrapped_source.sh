#!/bin/sh
# A connector behind a shell wrapper that does not `exec` it: the shell stays the parent.
python3 "$(dirname "$0")/scripted_source.py" "$@"
