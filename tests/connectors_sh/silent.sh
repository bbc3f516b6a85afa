#!/bin/sh
# Not an Airbyte connector: prints text, no protocol message, and exits 0.
echo "hello, I print no messages"
echo "a note on stderr" >&2
exit 0
