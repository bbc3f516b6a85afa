"""Explore a source without a destination: read source-faker's users into DuckDB and Arrow.

ferry connectors install source-faker
pip install 'ferry[arrow]'            # for to_arrow()
python examples/python/read_into_duckdb.py [COUNT]
"""

from __future__ import annotations

import sys

import duckdb

import ferry


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    source = ferry.read("source-faker", {"count": count, "seed": 1})

    # Every stream into its own typed table, written in batches as the records arrive.
    with duckdb.connect("explore.duckdb") as con:
        print("tables:", ", ".join(source.to_duckdb(con)))
        top = con.execute(
            "SELECT nationality, count(*) AS n FROM users GROUP BY 1 ORDER BY n DESC LIMIT 3"
        ).fetchall()
        print("most common nationalities:", top)

    # One stream as an Arrow table (e.g. for pandas or polars: users.to_pandas()).
    users = source["users"].to_arrow()
    print(f"users: {users.num_rows} rows, columns {', '.join(users.column_names[:5])}, ...")

    # Or the records themselves, as dicts, streamed.
    for product in source["products"]:
        print("first product:", product["make"], product["model"])
        break


if __name__ == "__main__":
    main()
