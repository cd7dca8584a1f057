"""Helpers for tests that run Beam pipelines."""

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline


def local_pipeline(**flags) -> TestPipeline:
    """A TestPipeline on the offline FnApiRunner (the DirectRunner would try to download Prism first).

    ``flags`` are pipeline options, e.g. ``direct_running_mode="multi_processing", direct_num_workers=2``.
    """
    return TestPipeline(runner=FnApiRunner(), options=PipelineOptions([], **flags))
