import os

from deltalake import DeltaTable

table = os.path.abspath("warehouse/recommendations")   # one absolute path for deltalake and the JVM
files = DeltaTable(table).file_uris()                  # the Parquet files of the latest Delta version
recs = spark.read.option("basePath", table).parquet(*files)   # run_date comes from the folder names
latest = recs.where(recs.run_date == recs.agg({"run_date": "max"}).first()[0])
