import polars as pl

latest = (pl.scan_delta("warehouse/recommendations")
          .filter(pl.col("run_date") == pl.col("run_date").max())
          .collect())                                              # a polars.DataFrame
