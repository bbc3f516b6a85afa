#!/bin/sh
# A connector that crashes before printing anything on stdout.
echo "Traceback (most recent call last):" >&2
echo '  File "connector.py", line 1, in <module>' >&2
echo "RuntimeError: the connector broke on purpose" >&2
exit 3
