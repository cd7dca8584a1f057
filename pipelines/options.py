"""Command-line options: argparse parsers, ``--config FILE.yaml`` merging, and Beam's own flags.

Precedence: a flag given on the command line wins over the config file, which wins over the
defaults. Config keys are the long flag names, with dashes or underscores (``num-select`` or
``num_select``). Flags winnow does not know are handed to Beam as pipeline options; a flag
neither knows is an error, with the closest spelling suggested.
"""

import argparse
import difflib

import yaml
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from winnow.transforms import io, minhash


class UsageError(Exception):
    """The command line or config file is wrong; the message says how."""


def _beam_parser() -> argparse.ArgumentParser:
    # The same registry PipelineOptions.get_all_options() parses with.
    parser = _BeamArgumentParser(allow_abbrev=False)
    for options_class in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)  # noqa: SLF001 - Beam's documented extension point
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings]  # noqa: SLF001


def _given(action: argparse.Action, argv: list[str]) -> bool:
    return any(arg == s or arg.startswith(s + "=") for arg in argv for s in action.option_strings)


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """``{dest: value}`` from a YAML mapping whose keys are the parser's long flag names."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path}: not valid YAML ({err})") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values, got {type(loaded).__name__}")
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}  # noqa: SLF001
    config = {}
    for key, value in loaded.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in dests:
            close = difflib.get_close_matches(dest, sorted(dests), n=1)
            hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise UsageError(f"--config {path}: unknown key {key!r}{hint}")
        config[dest] = value
    return config


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv``: ``(winnow options, Beam pipeline flags)``.

    Options come from the command line, then ``--config``, then the parser's defaults. Values
    from the config file go through the same ``type`` conversion and ``choices`` check as flags.

    Raises:
        UsageError: an unknown flag, a bad config file or value.
    """
    args, rest = parser.parse_known_args(argv)
    unknown = _unknown_flags(rest)
    if unknown:
        known = _option_strings(parser) + _option_strings(_beam_parser())
        close = difflib.get_close_matches(unknown[0].split("=", 1)[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unrecognized argument {unknown[0]}{hint}")
    if getattr(args, "config", None):
        config = load_config(args.config, parser)
        for action in parser._actions:  # noqa: SLF001
            if action.dest in config and not _given(action, argv):
                setattr(args, action.dest, _convert(action, config[action.dest]))
    return args, rest


def _convert(action: argparse.Action, value):
    """A config value as argparse would have parsed it for ``action``."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._AppendAction):  # noqa: SLF001
        values = value if isinstance(value, list) else [value]
        return [_convert_one(action, flag, v) for v in values]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # noqa: SLF001
        if not isinstance(value, bool):
            raise UsageError(f"config key {flag.lstrip('-')}: expected true or false, got {value!r}")
        return value
    return _convert_one(action, flag, value)


def _convert_one(action: argparse.Action, flag: str, value):
    if action.type is not None:
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise UsageError(f"config key {flag.lstrip('-')}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"config key {flag.lstrip('-')}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _unknown_flags(flags: list[str]) -> list[str]:
    _, unknown = _beam_parser().parse_known_args(flags)
    return unknown


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value}")
    return value


def shares(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers (a YAML list works too); their range is the config's to check."""
    try:
        return tuple(float(part) for part in text.strip("[]() ").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


DEDUP_RECALL_WEIGHT = 0.8  # winnow verifies every LSH link, so a false positive costs little


def add_minhash_arguments(group, prefix: str) -> None:
    """MinHash-LSH flags (``--{prefix}threshold``, ...) shared by ``winnow select`` and ``winnow dedup``."""
    group.add_argument(f"--{prefix}threshold", type=float, default=0.8, help="Jaccard similarity of near-duplicates (default: %(default)s)")
    group.add_argument(f"--{prefix}num-perm", type=positive_int, default=128, help="MinHash permutations (default: %(default)s)")
    group.add_argument(f"--{prefix}shingle", type=positive_int, default=5, help="shingle size n (default: %(default)s)")
    group.add_argument(f"--{prefix}shingle-kind", choices=("word", "char"), default="word", help="word or character n-grams (default: %(default)s)")
    group.add_argument(
        f"--{prefix}false-negative-weight", type=float, default=DEDUP_RECALL_WEIGHT,
        help="weight of missed pairs vs false candidates when choosing bands x rows (datasketch: 0.5; default: %(default)s, "
        "since every candidate link is verified)",
    )


def minhash_config(args, prefix: str, seed: int):
    """The MinHashConfig of the flags added by ``add_minhash_arguments``; UsageError on bad values."""
    dest = prefix.replace("-", "_")
    try:
        return minhash.MinHashConfig(
            threshold=getattr(args, f"{dest}threshold"), num_perm=getattr(args, f"{dest}num_perm"),
            shingle=getattr(args, f"{dest}shingle"), shingle_kind=getattr(args, f"{dest}shingle_kind"),
            false_negative_weight=getattr(args, f"{dest}false_negative_weight"), seed=seed,
        )
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


def add_input_arguments(group, what: str) -> None:
    """``--input`` (repeatable), ``--text-field`` and ``--id-field``, shared by every job."""
    group.add_argument("--input", action="append", metavar="GLOB", help=f"{what}: .jsonl, .jsonl.gz, .jsonl.zst, .parquet (repeatable)")
    group.add_argument("--text-field", default="text", help="field holding the document text (default: %(default)s)")
    group.add_argument("--id-field", default="id", help="field holding the document id; absent ids become '<file>:<position>' (default: %(default)s)")


def read_config(args, *required: str) -> io.ReadConfig:
    """Check that the ``required`` options (e.g. ``"input"``, ``"output"``) were given; the ReadConfig of the flags."""
    for name in required:
        if not getattr(args, name):
            raise UsageError(f"--{name} is required")
    try:
        return io.ReadConfig(text_field=args.text_field, id_field=args.id_field)
    except ValueError as err:
        raise UsageError(str(err)) from None
