"""The same selection on every runner winnow can reach offline.

``winnow select --method combined --dedup exact,minhash`` on the demo corpus must select the
same ids, with the same counts, on:

- the ``FnApiRunner`` in memory (the default),
- the ``FnApiRunner`` with ``--direct_running_mode multi_threading --direct_num_workers 2``,
- the ``FnApiRunner`` with ``--direct_running_mode multi_processing --direct_num_workers 2``
  (SDK workers in subprocesses: every function is pickled and shipped, as on a cluster),
- the ``PortableRunner``: the pipeline is serialized to a Beam Runner API proto and submitted over
  gRPC to a job service on localhost (``python -m winnow.pipelines.job_service``: Beam's local job
  service with timed data flushes off, started here as a subprocess and stopped afterwards), with
  ``--environment_type LOOPBACK`` (the SDK harness in the submitting process) and with
  ``--environment_type EXTERNAL``: a Beam worker pool started as a separate process from a venv
  where only winnow's sdist is installed (``sdist_venv``), which is what Flink and Spark task
  managers run. This is the submission path Flink and Spark job servers use; only the engine
  behind the job service differs.

Not tested here, because they cannot run offline: the Flink and Spark job servers are Java jars
Beam downloads on first use, and the Prism runner is a Go binary Beam downloads on first use.
Beam's ``DaskRunner`` is not offered: it drops the outputs of branching transforms (a PCollection
consumed by two steps), which winnow's jobs have everywhere.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane, sdk_worker
from apache_beam.transforms import userstate
from apache_beam.testing.util import assert_that, equal_to

from examples import make_demo_corpus
from tests.conftest import clean_env
from winnow.pipelines import cli, runner
from winnow.pipelines import job_service as job_service_main
from winnow.pipelines.options import UsageError

N_SELECT = 40
JOB_TIMEOUT_S = 300
SERVICE_START_TIMEOUT_S = 60
PARALLEL_FLAGS = {
    "multi_threading": ["--direct_running_mode", "multi_threading", "--direct_num_workers", "2"],
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
}


def _select_argv(demo_dir: pathlib.Path, output: pathlib.Path) -> list[str]:
    return ["select", "--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*"),
            "--output", str(output), "--num-select", str(N_SELECT), "--method", "combined",
            "--dedup", "exact,minhash", "--seed", "3"]


def _selected_ids(output: pathlib.Path) -> list[str]:
    files = sorted((output / "selected").glob("*.parquet"))
    assert files, f"no Parquet files in {output / 'selected'}"
    return sorted(i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())


def _counts(output: pathlib.Path) -> dict:
    return json.loads((output / "report.json").read_text())["counts"]


@pytest.fixture(scope="module")
def job_service(tmp_path_factory):
    """A Beam job service on localhost in a subprocess: ``(port, log path)``; terminated afterwards."""
    directory = tmp_path_factory.mktemp("job_service")
    port_file, log = directory / "port", directory / "log"
    with log.open("w") as log_stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "winnow.pipelines.job_service", "--port", "0", "--port_file", str(port_file)],
            stdout=log_stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, f"job service exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"job service did not start in {SERVICE_START_TIMEOUT_S}s"
            time.sleep(0.1)
        port = int(port_file.read_text())
        socket.create_connection(("localhost", port), timeout=5).close()
        yield port, log
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def worker_pool(sdist_venv, tmp_path_factory):
    """A Beam worker pool in a subprocess of the sdist venv, away from the repository: ``(port, log path)``."""
    directory = tmp_path_factory.mktemp("worker_pool")
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    log = directory / "log"
    with log.open("w") as log_stream:
        # the pool starts its SDK workers as "python": the venv's, as an activated venv would
        env = {**clean_env(), "PATH": f"{sdist_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        process = subprocess.Popen([str(sdist_venv / "bin" / "python"), "-m", "apache_beam.runners.worker.worker_pool_main",
                                    f"--service_port={port}"], cwd=directory, env=env, stdout=log_stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"worker pool exited: {log.read_text()}"
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"worker pool did not start in {SERVICE_START_TIMEOUT_S}s"
                time.sleep(0.1)
        yield port, log
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A demo corpus of about 250 documents: these runs measure agreement, not speed."""
    directory = tmp_path_factory.mktemp("small_demo")
    make_demo_corpus.write_corpus(directory, code_docs=60)
    return directory, None


@pytest.fixture(scope="module")
def runs(small_corpus, job_service, worker_pool, tmp_path_factory):
    """Every runner's run: ``{name: (output directory, finished process or None in-process)}``.

    The three runs in subprocesses go concurrently, while the in-memory run goes in this process:
    most of a small job's time is runner start-up and coordination, not computation, so
    overlapping the runs shortens the test.
    """
    demo_dir, _ = small_corpus
    port, _ = job_service
    portable = ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{port}"]
    extra = {**PARALLEL_FLAGS,
             "portable": [*portable, "--environment_type", "LOOPBACK"],
             "external": [*portable, "--environment_type", "EXTERNAL", "--environment_config", f"localhost:{worker_pool[0]}"]}
    outputs = {name: tmp_path_factory.mktemp(name) / "out" for name in ["in_memory", *extra]}
    started = {
        name: subprocess.Popen([sys.executable, "-m", "winnow.pipelines.cli", *_select_argv(demo_dir, outputs[name]), *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, flags in extra.items()
    }
    try:
        assert cli.main(_select_argv(demo_dir, outputs["in_memory"])) == 0
        finished = {}
        for name, process in started.items():
            _, stderr = process.communicate(timeout=JOB_TIMEOUT_S)
            finished[name] = (process.returncode, stderr)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {"in_memory": (outputs["in_memory"], (0, "")), **{name: (outputs[name], finished[name]) for name in extra}}


def _result(runs, name):
    output, (returncode, stderr) = runs[name]
    assert returncode == 0, stderr
    return _selected_ids(output), _counts(output)


def test_in_memory_selects_exactly_n_after_dedup(runs):
    ids, counts = _result(runs, "in_memory")
    assert len(ids) == len(set(ids)) == N_SELECT
    assert counts["selected"] == N_SELECT
    assert counts["dropped"]["exact_duplicate"] > 0
    assert counts["dropped"]["near_duplicate"] > 0


@pytest.mark.parametrize("mode", list(PARALLEL_FLAGS))
def test_local_parallel_modes_select_the_same_ids(runs, mode):
    assert _result(runs, mode) == _result(runs, "in_memory")
    report = json.loads((runs[mode][0] / "report.json").read_text())
    assert report["options"]["beam_flags"] == PARALLEL_FLAGS[mode]


@pytest.mark.parametrize("name", ["portable", "external"])
def test_portable_runner_on_a_local_job_service_selects_the_same_ids(runs, job_service, worker_pool, name):
    _, log = job_service
    assert _result(runs, name) == _result(runs, "in_memory")
    # The jobs really went through the job service, not a local fallback; EXTERNAL ones through the pool's workers.
    assert "with state DONE" in log.read_text()
    _, (_, stderr) = runs[name]  # on a remote runner the command says where progress is, and logs job states
    assert "on PortableRunner; its UI shows the progress" in stderr and "Job state changed to DONE" in stderr
    if name == "external":
        assert "Starting worker with command" in (worker_pool[1]).read_text()


def test_beams_timed_flush_drops_bytes_written_while_it_flushes():
    """Why winnow turns timed flushes off (``runner.disable_timed_data_flushes``).

    The flush hands the buffer on, then empties it; a write by another thread in between is lost.
    The interleaving is forced: the flush callback itself has a second thread write and waits for it.
    If a Beam upgrade makes this test fail, the workaround can go.
    """
    streams, late_written, flushed_once = [], threading.Event(), threading.Event()

    def write_late() -> None:
        streams[0].write(b"|late")
        late_written.set()

    def on_flush(data: bytes) -> None:
        delivered.append(bytes(data))
        if streams and not flushed_once.is_set():  # a tick before the stream is bound does nothing
            writer = threading.Thread(target=write_late)
            writer.start()
            writer.join(timeout=60)
            flushed_once.set()

    delivered = []
    streams.append(data_plane.TimeBasedBufferingClosableOutputStream(on_flush, on_flush, time_flush_threshold_ms=10))
    streams[0].write(b"early")
    assert flushed_once.wait(timeout=60), "the timed flush never ran"
    assert late_written.is_set(), "the write during the flush did not complete"
    streams[0].close()
    # Written, and not delivered by the flush, nor by any later flush, nor by close().
    assert b"|late" not in b"".join(delivered)


def test_local_runner_streams_have_no_timer(monkeypatch):
    """Whatever the runner flags, the FnApiRunners of the process create size-flushed streams only."""
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)  # Beam's value
    runner.make_pipeline(["--runner", "directrunner"])
    stream = data_plane.ClosableOutputStream.create(None, None, worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    assert isinstance(stream, data_plane.SizeBasedBufferingClosableOutputStream)
    assert not isinstance(stream, data_plane.TimeBasedBufferingClosableOutputStream)


_FIRST_STAGE_TORN_DOWN = threading.Event()
IDLE_SHUTDOWN_TIMEOUT_S = 30  # far below Beam's 60 s, far above winnow's 1 s plus the check's period


class _MarksTeardown(beam.DoFn):
    def process(self, element):
        yield element

    def teardown(self):
        _FIRST_STAGE_TORN_DOWN.set()


def _after_the_first_stage_is_torn_down(element):
    return element, _FIRST_STAGE_TORN_DOWN.wait(IDLE_SHUTDOWN_TIMEOUT_S)


def test_local_runner_shuts_a_finished_stages_processor_down_while_the_pipeline_runs(monkeypatch):
    """A stage's cached bundle processor (and the memory of its last bundle) goes once idle, not after Beam's 60 s."""
    monkeypatch.setattr(sdk_worker, "DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S", 60)  # Beam's value
    _FIRST_STAGE_TORN_DOWN.clear()
    with runner.make_pipeline([]) as pipeline:
        assert sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S == runner.BUNDLE_PROCESSOR_IDLE_S
        seen = (pipeline | beam.Create([1, 2]) | "First" >> beam.ParDo(_MarksTeardown()) | beam.Reshuffle()
                | "Second" >> beam.Map(_after_the_first_stage_is_torn_down))
        assert_that(seen, equal_to([(1, True), (2, True)]))


class _Counts(beam.DoFn):
    """A stateful DoFn: a running count per key."""

    COUNT = userstate.CombiningValueStateSpec("count", sum)

    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        count.add(1)
        yield element[0], count.read()


class _Timed(beam.DoFn):
    EXPIRY = userstate.TimerSpec("expiry", beam.TimeDomain.WATERMARK)

    def process(self, element, timer=beam.DoFn.TimerParam(EXPIRY)):
        yield element


def test_dofn_specs_are_computed_once_per_dofn_type_and_stay_right(monkeypatch):
    computed = []

    def counting(dofn):
        computed.append(type(dofn).__name__)
        return original(dofn)

    original = userstate.get_dofn_specs
    monkeypatch.setattr(userstate, "get_dofn_specs", counting)
    runner.memoize_dofn_specs()
    runner.memoize_dofn_specs()  # a second call wraps nothing again
    for _ in range(3):
        assert userstate.get_dofn_specs(_Counts()) == ({_Counts.COUNT}, set())
        assert userstate.get_dofn_specs(_Timed()) == (set(), {_Timed.EXPIRY})
        assert not userstate.is_stateful_dofn(_MarksTeardown())
    assert sorted(computed) == ["_Counts", "_MarksTeardown", "_Timed"]
    with runner.make_pipeline([]) as pipeline:  # state still works: each key counts its own elements
        counted = pipeline | beam.Create([("a", 1), ("b", 2), ("a", 3)]) | beam.ParDo(_Counts())
        assert_that(counted, equal_to([("a", 1), ("a", 2), ("b", 1)]))


def test_pipelines_skip_beams_type_check_unless_the_flags_ask_for_it():
    def type_check(flags):
        return runner.make_pipeline(flags).options.view_as(TypeOptions).pipeline_type_check

    assert type_check([]) is False
    assert type_check(["--pipeline_type_check"]) is True
    assert type_check(["--no_pipeline_type_check"]) is False


def test_job_service_refuses_flags_that_would_start_beams_own_service(capsys):
    for flag in ("--background", "--backg"):
        assert job_service_main.main(["--port", "0", flag]) == 2
        assert "--background not supported" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [
    ("--experiments", "data_buffer_time_limit_ms=1000"),
    ("--environment_config", '{"data_buffer_time_limit_ms": 1000}'),
])
def test_timed_flush_setting_is_refused_before_any_output(demo_corpus, tmp_path, capsys, flag, value):
    demo_dir, _ = demo_corpus
    argv = [*_select_argv(demo_dir, tmp_path / "out"), flag, value]
    assert cli.main(argv) == 2
    assert f"{flag} data_buffer_time_limit_ms: Beam 2.77's timed data flushes lose records" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [
    [],
    ["--experiments", "data_buffer_time_limit_ms=0"],
    ["--environment_config", '{"data_buffer_time_limit_ms": 0, "state_cache_size": 100}'],
    ["--environment_config", "localhost:50000"],
])
def test_flags_without_a_timed_flush_are_accepted(flags):
    assert runner.timed_flush_flag(PipelineOptions(flags)) is None


def test_environment_config_that_is_not_json_is_a_usage_error():
    with pytest.raises(UsageError, match="--environment_config: not valid JSON"):
        runner.timed_flush_flag(PipelineOptions(["--environment_config", "{data_buffer_time_limit_ms: 1000"]))


def test_cli_caps_malloc_arenas_unless_the_user_chose_a_number(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cli.limit_malloc_arenas()  # glibc's mallopt accepted the cap (this suite runs on glibc Linux)
    assert os.environ["MALLOC_ARENA_MAX"] == str(cli.MALLOC_ARENAS)  # and subprocess workers inherit it
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not cli.limit_malloc_arenas() and os.environ["MALLOC_ARENA_MAX"] == "4"


def test_cli_allocates_arrow_buffers_with_malloc_unless_the_user_chose_a_pool(monkeypatch):
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    original = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())  # the default of pyarrow's wheels
        assert cli.use_system_arrow_pool()
        assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"  # subprocess workers inherit it
        before = pa.system_memory_pool().bytes_allocated()
        column = pa.array(range(100_000))  # allocated from the new default
        assert pa.default_memory_pool().backend_name == "system" and pa.system_memory_pool().bytes_allocated() >= before + column.nbytes
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # the user's choice stands
        assert not cli.use_system_arrow_pool() and pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(original)


def test_cli_trims_the_malloc_heap_from_one_daemon_thread():
    assert cli.start_malloc_trimmer() and cli.start_malloc_trimmer()  # glibc has malloc_trim; a second call starts nothing
    trimmers = [t for t in threading.enumerate() if t.name == "winnow-malloc-trim"]
    assert len(trimmers) == 1 and trimmers[0].daemon and trimmers[0].is_alive()
