"""winnow: data selection and curation for training corpora, on Apache Beam.

Beam ships this file to remote workers with ``--setup_file ./setup.py``; keep the runtime
dependencies here complete.
"""

from setuptools import setup

VERSION = "0.1.0"

# The reference implementations winnow is compared against: tests and benchmarks only.
# zip-fit imports datasets, lz4 and brotli at module level; data-selection needs nltk.
REFERENCES = [
    "data-selection==1.0.3",
    "nltk>=3.8",
    "zip-fit==1.0.9",
    "datasets>=2.0",
    "lz4>=3.1",
    "brotli>=1.0",
    "vendi-score==0.0.3",
    "scipy>=1.10",
]

setup(
    name="winnow",
    version=VERSION,
    description="Data selection and curation for training corpora (DSIR, ZIP-FIT, k-means, Vendi, dedup) on Apache Beam",
    python_requires=">=3.11",
    packages=["pipelines", "transforms"],
    install_requires=[
        "apache-beam==2.77.0",
        "numpy>=1.26",
        "pyarrow>=15",
        "zstandard>=0.22",
        "scikit-learn>=1.4",
        "datasketch>=1.6",
        "pyyaml>=6",
    ],
    extras_require={
        # setuptools: tests/test_package.py builds and installs the sdist (venvs of Python >= 3.12 lack it)
        "test": ["pytest>=8", "hypothesis>=6", "setuptools", *REFERENCES],
        "bench": ["psutil>=5.9", *REFERENCES],
    },
    entry_points={"console_scripts": ["winnow = pipelines.cli:main"]},
)
