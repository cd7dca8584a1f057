"""winnow: data selection and curation for training corpora, on Apache Beam.

The folders ``transforms/`` and ``pipelines/`` install as ``winnow.transforms`` and
``winnow.pipelines`` (``winnow`` is a namespace package: generic top-level names would collide
in site-packages). Beam ships this file to remote workers with ``--setup_file ./setup.py``; keep
the runtime dependencies here complete.
"""

import pathlib

from setuptools import setup

VERSION = "0.2.0"

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
    "datasketch>=1.6",
]

setup(
    name="winnow",
    version=VERSION,
    description="Data selection and curation for training corpora (DSIR, ZIP-FIT, k-means, Vendi, dedup) on Apache Beam",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Text Processing",
    ],
    python_requires=">=3.11",
    packages=["winnow.transforms", "winnow.pipelines"],
    package_dir={"winnow.transforms": "transforms", "winnow.pipelines": "pipelines"},
    install_requires=[
        "apache-beam==2.77.0",
        "numpy>=1.26",
        "pyarrow>=15",
        "zstandard>=0.22",
        "scikit-learn>=1.4",
        "scipy>=1.10",  # sparse tf-idf matrices in embed.py
        "pyyaml>=6",
        "tqdm>=4.60",  # the progress bar on a terminal
    ],
    extras_require={
        # setuptools: tests/test_package.py builds and installs the sdist (venvs of Python >= 3.12 lack it)
        "test": ["pytest>=8", "hypothesis>=6", "setuptools", *REFERENCES],
        "bench": ["psutil>=5.9", *REFERENCES],
    },
    entry_points={"console_scripts": ["winnow = winnow.pipelines.cli:main"]},
)
