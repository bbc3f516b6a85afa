#!/usr/bin/env bash
# Quick start: install ferry, install source-faker, sync 10 000 fake users/products/purchases into
# DuckDB, then sync again (incremental: only new data) and show how to query the result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
ferry=.venv/bin/ferry
$ferry connectors list --json | grep -q '"source-faker"' || $ferry connectors install source-faker
echo "== first sync"
$ferry sync examples/faker-to-duckdb.yaml
echo "== second sync (incremental: reads only what is new)"
$ferry sync examples/faker-to-duckdb.yaml
echo "== the data is in ./faker.duckdb; for example:"
query="select count(*) as users, min(created_at) as first, max(created_at) as last from users"
echo ".venv/bin/python -c \"import duckdb; duckdb.connect('faker.duckdb').sql('$query').show()\""
.venv/bin/python -c "import duckdb; duckdb.connect('faker.duckdb', read_only=True).sql('$query').show()"
$ferry runs examples/faker-to-duckdb.yaml
