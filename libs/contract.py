"""Make a DataFrame's schema exactly a table's contract, nullability included.

``libs.schema.conform`` selects and casts the columns, but a cast keeps the source's nullability,
and Spark marks every column it reads from Parquet (and many it computes) as nullable. Delta stores
the schema of the written DataFrame, so without this step a table's log would not carry the
non-null columns of its :class:`~libs.schema.TableSpec`.
"""
from __future__ import annotations

from pyspark.sql import DataFrame

from libs.schema import TableSpec, conform


def conform_exact(df: DataFrame, spec: TableSpec) -> DataFrame:
    """``conform(df, spec)`` re-typed to ``spec.schema``; a null in a non-null column fails the job.

    The rows are re-encoded in the JVM against the contract (no Python round trip), which checks
    every non-null field and array element at run time.
    """
    df = conform(df, spec)
    if df.schema == spec.schema:
        return df
    jspark = df.sparkSession._jsparkSession
    return DataFrame(jspark.createDataFrame(df._jdf.rdd(), jspark.parseDataType(spec.schema.json())),
                     df.sparkSession)
