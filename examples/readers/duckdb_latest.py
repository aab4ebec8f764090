import duckdb
from deltalake import DeltaTable

recs = DeltaTable("warehouse/recommendations").to_pyarrow_dataset()  # DuckDB scans the Python variable
latest = duckdb.sql("SELECT * FROM recs WHERE run_date = (SELECT max(run_date) FROM recs)").to_arrow_table()
