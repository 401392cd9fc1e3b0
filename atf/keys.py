"""Names shared by the trainer, the sweep and the report, defined once.

The trainer returns metrics under these names, the sweep logs them to MLflow
under the same names, and the report reads them back with the same helpers.
Nothing else in the project spells a metric, tag or artifact name by hand.

Units: NME and FR are percentages (NME x 100, as the paper prints them);
AUC is a fraction in [0, 1].
"""

from __future__ import annotations

__all__ = [
    "EPOCH", "STAGE", "TRAIN_LOSS", "VAL_LOSS", "VAL_NME", "LR", "EPOCH_TIME",
    "val_metric", "time_metric", "cpu_time_metric", "TIME_PHASES", "SCRATCH_SUFFIX",
    "NME", "FR", "AUC", "TEST_METRICS", "FAIL_THRESHOLD",
    "test_metric", "parse_test_metric", "parse_protocol_metric",
    "PROTOCOL_BENCHMARK", "PROTOCOL_OCN", "PROTOCOLS",
    "RUN_ID_PATTERN", "TAG_SWEEP", "TAG_TABLES", "TAG_CELL", "TAG_BACKBONE", "TAG_TARGET", "TAG_AUX", "TAG_LOSS",
    "TAG_PROPORTIONS", "TAG_SCENARIO", "TAG_SEED", "TAG_DATA", "TAG_SELECTION", "TAG_STATUS",
    "TAG_KIND", "TAG_TRIAL", "TAG_ROLE", "ROLE_CELL", "ROLE_SEARCH", "CELL_TAGS",
    "TAG_ERROR", "TAG_FAILURE", "FAILURE_DETERMINISTIC", "FAILURE_CRASH", "FAILURE_STOPPED",
    "TAG_PROFILE", "TAG_IN_SWEEP", "TAG_IN_TABLE",
    "ARTIFACT_CED_DIR", "ARTIFACT_MODEL_DIR", "ARTIFACT_PRED_DIR", "ARTIFACT_CONFIG",
    "ced_artifact", "pred_artifact",
    "LOSS_AT", "LOSS_MB", "PROPORTIONS_WD", "PROPORTIONS_WOD",
    "SCENARIOS", "SCENARIO_BASELINE", "SCENARIO_ATF", "SCENARIO_JOINT", "SCENARIO_NOVEL",
    "TRAIN_PREFIX", "VAL_PREFIX", "TIME_PREFIX", "TAG_SWEEP_FILE", "TAG_CHOSEN_FROM", "CED_COLUMNS",
    "TABLES", "RESULT_FINAL", "RESULT_STEP", "RESULT_FAILED", "RESULT_ERROR", "RESULT_ERROR_KIND",
    "WFLW_ATTRIBUTES", "SYNTH_MARKER",
]

# -- per-epoch metrics (reported through the trainer's callback) ----------------------------
TRAIN_PREFIX = "train/"        # metric families by first component: training, validation split,
VAL_PREFIX = "val/"            # wall times (test metrics: `test_metric`)
TIME_PREFIX = "time/"
EPOCH = "epoch"                # 1-based epoch index within the current stage
STAGE = "stage"                # 0 = main training; 1 = fine-tuning stage of joint/novel
TRAIN_LOSS = TRAIN_PREFIX + "loss"  # mean training loss of the epoch (all heads, as optimised)
VAL_LOSS = VAL_PREFIX + "loss"      # target head's own loss on the validation split
VAL_NME = VAL_PREFIX + "nme"        # target NME (%) on the validation split carved from train
LR = TRAIN_PREFIX + "lr"            # learning rate at the end of the epoch
EPOCH_TIME = TRAIN_PREFIX + "epoch_seconds"


def val_metric(dataset: str) -> str:
    """Per-head validation NME (%), e.g. during joint/novel head fine-tuning."""
    return f"{VAL_PREFIX}{dataset}/nme"


TIME_PHASES = ("main", "joint", "novel_head", "novel_scratch")  # phases a run times (time_metric)


def time_metric(phase: str) -> str:
    """Wall seconds of a training phase: one of TIME_PHASES."""
    return f"{TIME_PREFIX}{phase}_seconds"


def cpu_time_metric(phase: str) -> str:
    """CPU seconds of the training process in a phase (its threads; loader workers not counted)."""
    return f"{TIME_PREFIX}{phase}_cpu_seconds"


SCRATCH_SUFFIX = "_scratch"  # novel scenario: test metrics of the model trained from scratch,
                             # logged as test_metric(dataset + SCRATCH_SUFFIX, subset, metric)

# -- final test metrics, one per dataset x subset x metric ---------------------------------
NME = "nme"
FR = "fr"
AUC = "auc"
TEST_METRICS = (NME, FR, AUC)
FAIL_THRESHOLD = 0.10          # FR@0.1 and AUC@0.1


# NME protocols (eval.protocol). BENCHMARK: original pixels, the benchmark's normaliser (eye
# corners, AFLW box size). OCN: the public OCN code's, which the paper's OCN numbers use: the test
# crop is the detector box joined with the ground-truth landmarks, x1.12, resized anisotropically;
# NME in crop units, AFLW normaliser = 1 crop unit. Its metrics carry their own prefix.
PROTOCOL_BENCHMARK = "benchmark"
PROTOCOL_OCN = "ocn"
PROTOCOLS = (PROTOCOL_BENCHMARK, PROTOCOL_OCN)
_PROTOCOL_PREFIX = {PROTOCOL_BENCHMARK: "test", PROTOCOL_OCN: "test_ocn"}


def test_metric(dataset: str, subset: str, metric: str, protocol: str = PROTOCOL_BENCHMARK) -> str:
    """`test/wflw/largepose/nme` (benchmark) or `test_ocn/wflw/largepose/nme`: one table cell value."""
    if metric not in TEST_METRICS:
        raise ValueError(f"unknown test metric {metric!r}; expected one of {TEST_METRICS}")
    if protocol not in _PROTOCOL_PREFIX:
        raise ValueError(f"unknown NME protocol {protocol!r}; expected one of {PROTOCOLS}")
    return f"{_PROTOCOL_PREFIX[protocol]}/{dataset}/{subset}/{metric}"


def parse_protocol_metric(name: str) -> tuple[str, str, str, str] | None:
    """(protocol, dataset, subset, metric) of any protocol's test metric; None otherwise."""
    parts = name.split("/")
    if len(parts) != 4 or parts[3] not in TEST_METRICS:
        return None
    for protocol, prefix in _PROTOCOL_PREFIX.items():
        if parts[0] == prefix:
            return protocol, parts[1], parts[2], parts[3]
    return None


def parse_test_metric(name: str) -> tuple[str, str, str] | None:
    """Inverse of `test_metric` for the benchmark protocol; None for any other metric name."""
    parsed = parse_protocol_metric(name)
    if parsed and parsed[0] == PROTOCOL_BENCHMARK:
        return parsed[1:]
    return None


# -- run tags (set by the sweep, filtered on by the report) --------------------------------
TAG_SWEEP = "atf.sweep"            # sweep name (file stem), on parent and child runs
TAG_TABLES = "atf.tables"          # comma-separated paper tables the cell feeds, e.g. "III,VII"
TAG_CELL = "atf.cell"              # content hash of resolved config + seed (cell identity)
TAG_BACKBONE = "atf.backbone"      # ocn | hrnet_w18
TAG_TARGET = "atf.target"          # target dataset name
TAG_AUX = "atf.aux"                # comma-separated auxiliary datasets, "" for a baseline
TAG_LOSS = "atf.loss"              # LOSS_AT | LOSS_MB | "" for a baseline
TAG_PROPORTIONS = "atf.proportions"  # PROPORTIONS_WD | PROPORTIONS_WOD | "" for a baseline
TAG_SCENARIO = "atf.scenario"      # one of SCENARIOS
TAG_SEED = "atf.seed"
TAG_DATA = "atf.data"              # "real" or "synthetic(scale=0.02,seed=0)": never mistake one for the other
TAG_SELECTION = "atf.selection"    # "val" (honest) or "test" (paper protocol, explicitly named)
TAG_STATUS = "atf.status"          # finished | failed | running
RUN_ID_PATTERN = r"[0-9a-f]{32}"   # an MLflow run id; a shared store's anything-else is refused

TAG_KIND = "atf.kind"              # "sweep" on parent runs, "trial" on child runs
TAG_TRIAL = "atf.trial"            # Tune trial id of the run's latest attempt
TAG_SWEEP_FILE = "atf.sweep_file"  # path of the sweep file, on the parent run
TAG_CHOSEN_FROM = "atf.chosen_from"  # tuned cell: run id of the search sample it reports
TAG_ROLE = "atf.role"              # ROLE_CELL: the run a table reports; ROLE_SEARCH: one Optuna sample
ROLE_CELL = "cell"
ROLE_SEARCH = "search"
TAG_ERROR = "atf.error"            # one-line reason of a failed run ("DatasetError: ...")
TAG_FAILURE = "atf.failure"        # FAILURE_DETERMINISTIC (data/config: failed once, not retried)
TAG_IN_SWEEP = "atf.in_sweep."     # + sweep name = "1": membership of a run several sweeps share
TAG_IN_TABLE = "atf.in_table."     # + table = "1"; TAG_SWEEP / TAG_TABLES are their comma-joined union
FAILURE_DETERMINISTIC = "deterministic"  # or FAILURE_CRASH (retries from the checkpoint used up)
FAILURE_CRASH = "crash"
FAILURE_STOPPED = "stopped"        # stopped unfinished (its search was stopped early)
TAG_PROFILE = "atf.profile"        # sweep profile the run was made with (e.g. "smoke"); "" = none
CELL_TAGS = (TAG_TABLES, TAG_CELL, TAG_BACKBONE, TAG_TARGET, TAG_AUX, TAG_LOSS, TAG_PROPORTIONS,
             TAG_SCENARIO, TAG_SEED, TAG_DATA, TAG_SELECTION)

LOSS_AT = "L_AT"
LOSS_MB = "L_MB"
PROPORTIONS_WD = "wd"              # with decreasing proportions
PROPORTIONS_WOD = "wod"            # without (decay = 1)

SCENARIO_BASELINE = "baseline"
SCENARIO_ATF = "atf"
SCENARIO_JOINT = "joint"
SCENARIO_NOVEL = "novel"
SCENARIOS = (SCENARIO_BASELINE, SCENARIO_ATF, SCENARIO_JOINT, SCENARIO_NOVEL)

# -- artifacts ------------------------------------------------------------------------------
ARTIFACT_CONFIG = "config.yaml"        # resolved run config
ARTIFACT_CED_DIR = "ced"               # one CSV per dataset/subset: columns threshold, fraction
ARTIFACT_MODEL_DIR = "model"           # pruned best model (TorchScript) + its checkpoint
ARTIFACT_PRED_DIR = "predictions"      # test predictions in the annotation CSV layout
CED_COLUMNS = ("threshold", "fraction")  # header of a CED CSV (atf.metrics.write_ced / read_ced)


def ced_artifact(dataset: str, subset: str) -> str:
    return f"{ARTIFACT_CED_DIR}/{dataset}_{subset}.csv"


def pred_artifact(dataset: str, subset: str) -> str:
    return f"{ARTIFACT_PRED_DIR}/{dataset}_{subset}.csv"


# -- the paper's tables (sweep cells name them; the report lays them out) --------------------
TABLES = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")

# -- trial results: what the Ray Tune trainable reports beside the metrics (never logged to MLflow)
RESULT_FINAL = "atf/final"            # 1.0 on the last report of a trial (carries the test metrics)
RESULT_STEP = "atf/step"              # epoch counted across stages: the MLflow step
RESULT_FAILED = "atf/failed"          # 1.0 on the terminal result of a deterministic failure
RESULT_ERROR = "atf/error"            # its one-line reason (a string)
RESULT_ERROR_KIND = "atf/error_kind"  # its exception class name

# -- data names -------------------------------------------------------------------------------
# WFLW's six attribute test subsets, in the order of the annotation files' attribute columns and
# of the paper's tables (metric names: test_metric("wflw", attribute, ...)).
WFLW_ATTRIBUTES = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
SYNTH_MARKER = "synthface.json"       # written last by the SynthFace generator at its output root
