"""Run one reader example (examples/readers/*.py) in the readers' environment and print, as
JSON, what its ``latest`` frame holds: columns, Arrow types and the key columns of every row.

    .venv-readers/bin/python tests/readers/harness.py examples/readers/polars_latest.py
"""
import json
import runpy
import sys

latest = runpy.run_path(sys.argv[1])["latest"]
table = latest.to_arrow() if hasattr(latest, "to_arrow") else latest   # polars -> pyarrow
print(json.dumps({"columns": table.column_names,
                  "types": {field.name: str(field.type) for field in table.schema},
                  "rows": table.select(["user_id", "rank", "item_id", "run_date", "reason"]).to_pylist()}, default=str))
