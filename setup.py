"""Packages the pipeline code (libs, jobs, pipelines) so the same code ships to Spark executors."""
from setuptools import find_packages, setup

setup(
    name="nightrec",
    version="0.1.0",
    description="Nightly deep-learning recommender pipeline on Spark, Delta, Petastorm and Horovod",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["libs", "libs.*", "jobs", "jobs.*", "pipelines", "pipelines.*"]),
    package_data={"": ["*.yaml"]},
    install_requires=["pyyaml", "numpy<2", "pandas", "pyarrow<11", "deltalake>=1.6,<2"],
    extras_require={
        "spark": ["pyspark>=3.5.3,<3.6", "delta-spark>=3.2,<3.4"],
        "tf": ["tensorflow-cpu>=2.15,<2.16", "horovod[spark]==0.28.1", "petastorm==0.13.1"],
        "test": ["pytest"],
    },
)
