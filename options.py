"""The command-line vocabulary every script shares, and the configs its options fill.

Torch-free on purpose: a script builds its parser from here before its heavy imports, so
`--help` answers in about a second instead of waiting for torch (`pick_device`, which needs
torch, imports it when it runs, after the help).
- `script_parser(doc)`: data, experiment and two-tower options (+ --llm); a script adds its
  own group and calls `parse_args_with_quick`, which applies `--quick` (explicit options
  win) and `check_options` (ranges, one-line ConfigError, before any data loads).
- `TowerConfig` (the two-tower's hyper-parameters, saved with every tower) with its ranges
  TOWER_LIMITS; `add_tower_args` / `tower_config` map options to it.
- `help_before_imports(parse_args)`: the call a script makes between its parser and its
  heavy imports.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import config
from config import RANDOM_SEED, ConfigError
from instacart import add_data_args


# ----------------------------------------------------------------------------
# the two-tower's hyper-parameters
@dataclass
class TowerConfig:
    """Hyper-parameters of the two-tower model (all saved with the model)."""

    dim: int = 64  # output embedding size of both towers
    hidden: int = 256  # MLP width
    id_embeddings: bool = True  # learned user / item ID embeddings beside the features
    # How the user tower sees the user's training purchases:
    #   none: features (+ ID) only; bag: a learned count-weighted bag of bought items feeds
    #   the MLP; centroid: the count-weighted mean of the item tower's own vectors for those
    #   items is added to the MLP's output, so a user starts next to what they buy (grocery
    #   is repeat buying) and the MLP learns the correction.
    purchases: str = "centroid"
    centroid_scale: float = 4.0  # initial weight of the centroid (learned)
    item_mlp: bool = True  # item tower: MLP like the user tower, or one linear layer
    temperature: float = 0.1  # InfoNCE softmax temperature
    logq: bool = False  # subtract log item frequency from logits (sampling-bias correction)
    # rows: every training row is a positive (frequent items seen more often); pairs: each
    # distinct (user, item) once per epoch, ~2.5x fewer steps (counts still reach the
    # user tower through the purchase weights)
    train_on: str = "rows"
    epochs: int = 4
    # > 0: each epoch trains on a fresh seeded sample of this many of those rows (at Kaggle's
    # size an epoch over all 29M rows takes hours on 2 cores); 0: every row
    epoch_rows: int = 0
    batch_size: int = 1024
    lr: float = 3e-3
    # constant, or cosine: linear warm-up over the first 5% of steps, then cosine decay to 0
    # (lets larger batches train at a higher peak rate)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    val_frac: float = 0.02  # training rows kept aside for the per-epoch validation loss
    n_contexts: int = 0  # > 0: the user tower takes a request-time category per row
    seed: int = RANDOM_SEED  # training seed: initialisation and batch order

    def __post_init__(self):
        for name in TOWER_LIMITS:
            why = tower_value_problem(name, getattr(self, name))
            if why:
                raise ConfigError(f"TowerConfig {name} {why}")

    def key(self) -> dict:
        return dict(self.__dict__)


# The hyper-parameters with a range, checked by TowerConfig and (as options, before any data
# loads) by check_options below: an int's minimum, or "> 0" for a positive finite float.
# epochs 0 would report (and save) an untrained tower; batch 1 has no in-batch negative.
TOWER_LIMITS = {
    "epochs": 1,
    "batch_size": 2,
    "dim": 1,
    "hidden": 1,
    "temperature": 0.0,
    "lr": 0.0,
    "epoch_rows": 0,
}


def tower_value_problem(name: str, value) -> str | None:
    """Why `value` is no valid TowerConfig.`name` (TOWER_LIMITS), or None."""
    low = TOWER_LIMITS[name]
    if isinstance(low, float):
        ok = math.isfinite(value) and value > low
        return None if ok else f"must be a number > {low:g} (got {value})"
    return None if value >= low else f"must be >= {low} (got {value})"


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(name: str = "auto") -> str:
    """The torch device of --device: auto (cuda when present, else cpu), cpu, cuda, cuda:N."""
    import re

    import torch  # lazy: the options (and --help) need no torch

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device {name!r}: not one of {DEVICE_CHOICES}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: requested but torch sees no CUDA device")
    if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return name


# ----------------------------------------------------------------------------
# the parser every script starts from
def help_before_imports(parse_args) -> None:
    """When a script runs with -h / --help, print its help and exit now: called by a script
    between its parse_args (built from this module) and its heavy imports (torch, the data
    layer), so the help needs neither. Does nothing when the script is imported (tests)."""
    if parse_args.__module__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
        parse_args()  # argparse prints the help and exits


def script_parser(doc: str, epilog_from: int | None = None, seeds: int = 3, llm_args: bool = True):
    """The argument parser every script starts from: its docstring's first line as the
    description (the rest, from line `epilog_from`, as the epilog; None: the whole docstring
    as the description), then the data, experiment and two-tower options, and --llm unless
    `llm_args` is False. The script adds its own group and calls parse_args_with_quick."""
    lines = doc.splitlines()
    parser = argparse.ArgumentParser(
        description=doc if epilog_from is None else lines[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=None if epilog_from is None else "\n".join(lines[epilog_from:]),
    )
    add_data_args(parser)
    add_experiment_args(parser, seeds=seeds)
    add_tower_args(parser)
    if llm_args:
        from llm.selection import add_llm_args  # lazy: scripts without an LLM arm skip llm/

        add_llm_args(parser)
    return parser


def add_experiment_args(parser, seeds: int = 3):
    """Options every experiment script shares besides the data ones."""
    g = parser.add_argument_group("experiment")
    g.add_argument(
        "--seeds",
        type=int,
        default=seeds,
        help=f"training seeds {RANDOM_SEED}, {RANDOM_SEED + 1}, ... (mean ± std over them)",
    )
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )
    g.add_argument("--retrain", action="store_true", help="ignore saved towers and train again")
    g.add_argument("--no-tifu", action="store_true", help="leave the TIFU-KNN reference row out")
    g.add_argument(
        "--tifu-pool",
        type=int,
        default=0,
        help="TIFU-KNN searches neighbours among a seeded sample of this many users "
        "(0: all users, exact; its cost grows with users^2); default %(default)s",
    )
    g.add_argument(
        "--out",
        default=None,
        help="results JSON path, replaced if it exists (default: a new file per run, "
        "results/<script>_<data>_<split>_<UTC time>_<options hash>.json)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    config.add_log_level_arg(g)
    return g


def parse_args_with_quick(parser, argv, quick: dict):
    """parser.parse_args(argv) plus a `--quick` smoke mode: the options in `quick` (dest ->
    value) take those values unless given explicitly on the command line. Checks the
    shared options' ranges (check_options) with a one-line ConfigError."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of about a minute: "
        + ", ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in quick.items()
        ),
    )
    args = parser.parse_args(argv)
    config.apply_log_level(args)
    if args.quick:
        given = options_given(parser, argv)
        for k, v in quick.items():
            if k not in given:
                setattr(args, k, v)
    check_options(args)
    return args


def options_given(parser, argv) -> set[str]:
    """The dests of the options written on the command line (`argv`, default sys.argv[1:]),
    whatever their values: `--quick --seeds 3` keeps 3 seeds even when 3 is the default.
    Parsed a second time with every default suppressed, so only given options are set."""
    actions, defaults = list(parser._actions), dict(parser._defaults)
    saved = [a.default for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        parser._defaults.clear()
        return set(vars(parser.parse_args(argv)))
    finally:
        for a, d in zip(actions, saved):
            a.default = d
        parser._defaults.update(defaults)


def check_options(args):
    """The shared options' ranges, before any data loads: a one-line ConfigError naming the
    option (e.g. --epochs 0 would report and save an untrained tower, --users 1 breaks the
    re-rankers, a bad --device or $LLM_BACKEND would fail only after the data is loaded)."""

    def at_least(option: str, low: int):
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value is not None and value < low:
            raise ConfigError(f"{option} must be >= {low} (got {value})")

    at_least("--seeds", 1)
    at_least("--threads", 1)  # None: torch's choice
    at_least("--tifu-pool", 0)
    at_least("--ranker-train-users", 0)
    if not getattr(args, "full", False):
        at_least("--users", 2)
        at_least("--items", 1)
    for name in TOWER_LIMITS:
        why = tower_value_problem(name, getattr(args, name)) if hasattr(args, name) else None
        if why:
            raise ConfigError(f"--{name.replace('_', '-')} {why}")
    if hasattr(args, "device"):
        pick_device(args.device)  # --device foo, or cuda on a machine without one
    if hasattr(args, "llm"):
        from llm.selection import check_backend_choice  # lazy, as script_parser's llm import

        check_backend_choice(args.llm, getattr(args, "llm_model", None))


def add_tower_args(parser):
    """The two-tower's hyper-parameters as options (defaults from TowerConfig)."""
    d = TowerConfig()
    g = parser.add_argument_group("two-tower")
    g.add_argument(
        "--epochs", type=int, default=d.epochs, help="training epochs over the training rows"
    )
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="in-batch negatives per step"
    )
    g.add_argument(
        "--epoch-rows",
        type=int,
        default=d.epoch_rows,
        help="rows per epoch: a fresh seeded sample of this many training rows each epoch "
        "(0: every row; for Kaggle's size on a CPU)",
    )
    g.add_argument("--dim", type=int, default=d.dim, help="embedding size of both towers")
    g.add_argument("--hidden", type=int, default=d.hidden, help="MLP width of both towers")
    g.add_argument("--temperature", type=float, default=d.temperature, help="InfoNCE temperature")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam (peak) learning rate")
    g.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default=d.lr_schedule,
        help="constant, or cosine (5%% warm-up, then decay to 0)",
    )
    g.add_argument(
        "--no-id-embeddings", action="store_true", help="features only, no learned ID embeddings"
    )
    g.add_argument(
        "--purchases",
        choices=["none", "bag", "centroid"],
        default=d.purchases,
        help="how the user tower sees the user's training purchases (see TowerConfig)",
    )
    g.add_argument(
        "--train-on",
        choices=["rows", "pairs"],
        default=d.train_on,
        help="positives per epoch: every training row, or each distinct (user, item) once",
    )
    g.add_argument(
        "--logq", action="store_true", help="logQ sampling-bias correction of in-batch negatives"
    )
    return g


def tower_config(args, seed: int, **overrides) -> TowerConfig:
    """TowerConfig from add_tower_args options, for one training seed."""
    options = {
        "dim": args.dim,
        "hidden": args.hidden,
        "id_embeddings": not args.no_id_embeddings,
        "purchases": args.purchases,
        "temperature": args.temperature,
        "logq": args.logq,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "epoch_rows": args.epoch_rows,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "train_on": args.train_on,
        "seed": seed,
    }
    return TowerConfig(**{**options, **overrides})
