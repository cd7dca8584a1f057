"""Command-line options: argparse parsers, ``--config FILE.yaml`` merging, and Beam's own flags.

Precedence: a flag given on the command line wins over the config file, which wins over the
defaults. Config keys are the long flag names, with dashes or underscores (``num-select`` or
``num_select``); a key that is a Beam pipeline option (``runner``, ``direct_num_workers``, ...) is
passed to Beam, so one recipe file holds everything a run needs. Flags winnow does not know are
handed to Beam as pipeline options; a flag neither knows is an error, with the closest spelling
suggested. A bad value is one line naming the flag, then "see --help", never the usage block.
"""

import argparse
import difflib

import yaml
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from winnow.transforms import io, minhash


class UsageError(Exception):
    """The command line or config file is wrong; the message says how."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag or value raises ``UsageError`` (one line) instead of printing the usage block."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


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


def load_config(path: str, parser: argparse.ArgumentParser) -> tuple[dict, list[str]]:
    """(``{dest: value}`` of winnow's options, Beam flags) from a YAML mapping of long flag names."""
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
    beam_dests = {a.dest: a for a in _beam_parser()._actions if a.option_strings}  # noqa: SLF001
    config, beam_flags = {}, []
    for key, value in loaded.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest in dests:
            config[dest] = value
        elif dest in beam_dests:
            beam_flags += _beam_flag(beam_dests[dest], value)
        else:
            close = difflib.get_close_matches(dest, sorted(dests | set(beam_dests)), n=1)
            hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise UsageError(f"--config {path}: unknown key {key!r}{hint}")
    return config, beam_flags


def _beam_flag(action: argparse.Action, value) -> list[str]:
    """A config value of a Beam option as its command-line flags."""
    flag = action.option_strings[-1]
    if action.nargs == 0:  # store_true options
        return [flag] if value else []
    values = value if isinstance(value, list) else [value]
    return [f"{flag}={v}" for v in values]


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
    config = {}
    if getattr(args, "config", None):
        config, config_beam_flags = load_config(args.config, parser)
        for action in parser._actions:  # noqa: SLF001
            if action.dest in config and not _given(action, argv):
                setattr(args, action.dest, _convert(action, config[action.dest]))
        beam_given = {flag.split("=", 1)[0] for flag in rest if flag.startswith("--")}
        rest = [flag for flag in config_beam_flags if flag.split("=", 1)[0] not in beam_given] + rest
    # every spelling of each option set on the command line or in the config file (re-selection checks them)
    args.given = {s for action in parser._actions if action.dest in config or _given(action, argv)  # noqa: SLF001
                  for s in action.option_strings}
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


def add_minhash_arguments(group, prefix: str) -> None:
    """MinHash-LSH flags (``--{prefix}threshold``, ...) shared by ``winnow select`` and ``winnow dedup``; defaults from MinHashConfig."""
    defaults = minhash.MinHashConfig()
    group.add_argument(f"--{prefix}threshold", type=float, default=defaults.threshold, help="Jaccard similarity of near-duplicates (default: %(default)s)")
    group.add_argument(f"--{prefix}num-perm", type=positive_int, default=defaults.num_perm, help="MinHash permutations (default: %(default)s)")
    group.add_argument(f"--{prefix}shingle", type=positive_int, default=defaults.shingle, help="shingle size n (default: %(default)s)")
    group.add_argument(f"--{prefix}shingle-kind", choices=minhash.SHINGLE_KINDS, default=defaults.shingle_kind, help="word or character n-grams (default: %(default)s)")
    group.add_argument(
        f"--{prefix}false-negative-weight", type=float, default=defaults.false_negative_weight,
        help="weight of missed pairs vs false candidates when choosing bands x rows (datasketch: 0.5; default: %(default)s, "
        "since every candidate link is verified)",
    )
    group.add_argument(f"--{prefix}max-cluster-size", type=positive_int, default=defaults.max_cluster_size, metavar="N",
                       help="a near-duplicate component of more records is split: every member checked against a representative on the "
                       "exact Jaccard of their texts' shingles (default: %(default)s)")
    group.add_argument("--minhash-seed", type=int, default=defaults.seed, help="seed of the MinHash permutations (a scoring option; default: %(default)s)")


def minhash_config(args, prefix: str):
    """The MinHashConfig of the flags added by ``add_minhash_arguments``; UsageError naming the flag on a bad value."""
    dest = prefix.replace("-", "_")
    values = {"threshold": "threshold", "num_perm": "num_perm", "shingle": "shingle", "shingle_kind": "shingle_kind",
              "false_negative_weight": "false_negative_weight", "max_cluster_size": "max_cluster_size"}
    flags = {field: f"--{prefix}{name.replace('_', '-')}" for field, name in values.items()}
    flags["seed"] = "--minhash-seed"
    return build_config(minhash.MinHashConfig, flags, seed=args.minhash_seed,
                        **{field: getattr(args, f"{dest}{name}") for field, name in values.items()})


def build_config(config_class, flags: dict[str, str], **values):
    """``config_class(**values)``; a ValueError or TypeError becomes a UsageError naming the flag of the field it quotes."""
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        message = str(err)
        for field, flag in flags.items():
            if message.startswith(f"{field}="):
                message = f"{flag} {message[len(field) + 1:]}"
                break
        raise UsageError(message) from None


def add_input_arguments(group, what: str) -> None:
    """``--input`` (repeatable), ``--text-field`` and ``--id-field``, shared by every job."""
    group.add_argument("--input", action="append", metavar="GLOB", help=f"{what}: .jsonl, .jsonl.gz, .jsonl.zst, .parquet (repeatable)")
    group.add_argument("--text-field", default="text", help="field holding the document text, in the inputs and the target (default: %(default)s)")
    group.add_argument("--id-field", default="id", help="field holding the document id; without it an id is '<file>:<line or row>' (default: %(default)s)")


def read_config(args) -> io.ReadConfig:
    """The ReadConfig of the flags."""
    return build_config(io.ReadConfig, {"text_field": "--text-field", "id_field": "--id-field"}, text_field=args.text_field, id_field=args.id_field)


def require(args, *names: str) -> None:
    """UsageError unless every option in ``names`` (e.g. ``"input"``, ``"output"``) was given."""
    for name in names:
        if not getattr(args, name):
            raise UsageError(f"--{name} is required (see --help)")
