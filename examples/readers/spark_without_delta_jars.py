import os

from deltalake import DeltaTable

table = os.path.abspath("warehouse/recommendations")   # one absolute path for deltalake and the JVM
delta = DeltaTable(table)
files = delta.file_uris()                              # the Parquet files of the latest Delta version
columns = [f.name for f in delta.schema().fields]      # the contract's columns, in its order
recs = (spark.read.option("basePath", table)           # run_date comes from the folder names
        .option("mergeSchema", "true")                 # files of nights before a new column lack it
        .parquet(*files).select(*columns))
latest = recs.where(recs.run_date == recs.agg({"run_date": "max"}).first()[0])
