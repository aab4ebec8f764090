import pyarrow.compute as pc
from deltalake import DeltaTable

recs = DeltaTable("warehouse/recommendations").to_pyarrow_dataset()
newest = pc.max(recs.to_table(columns=["run_date"])["run_date"])
latest = recs.to_table(filter=pc.field("run_date") == newest)    # a pyarrow.Table
