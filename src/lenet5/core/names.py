"""Every name a run is recorded under: tags, metrics, the model, environment variables.

The MLflow UI, `lenet5-report`, the saved views and a relaunched sweep all find runs by these
names, so each is spelled once, here.
"""

# --- run tags: a sweep and its trials ---------------------------------------------------
SWEEP_ID = "lenet5.sweep_id"  # the sweep a run belongs to (parent and trials)
SWEEP_KEY = "lenet5.sweep_key"  # identity of a sweep's command: a relaunch finds its parent
STUDY = "lenet5.study"  # the study file's name, "adhoc" for a plain multirun
ROLE = "lenet5.role"  # "sweep" on a parent run, "trial" on its children
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
FACTORS = "lenet5.factors"  # JSON list of the factor tags a study compares
BASELINE = "lenet5.baseline"  # JSON: factor -> its baseline level
EXPECTED_RUNS = "lenet5.expected_runs"  # jobs the sweep launches, where it is known
MARGIN = "lenet5.margin"  # study.margin: the smallest difference that matters, in points
SEARCHED = "lenet5.searched"  # JSON list of the config values a sweep varies (optimizer.lr)
NUISANCE = "lenet5.nuisance"  # JSON: a trial's own values of the study's nuisance keys
COHORT = "lenet5.cohort"  # the cohort a run trained in (hydra/launcher=cohort), stacked with others
SUPERSEDED = "lenet5.superseded"  # "true": an earlier attempt a relaunch re-ran
PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests a trial under its sweep

# --- run tags: one run ------------------------------------------------------------------
ADAPTIVE = "lenet5.adaptive"  # JSON {looks, alpha} of a sweep run with adaptive seeds
CONFIG_HASH = "lenet5.config_hash"  # identity of what a run computes
CHECKPOINT_DIR = "lenet5.checkpoint_dir"  # the local folder of a remote-artifact run
GIT_DIRTY = "lenet5.git_dirty"  # uncommitted changes to tracked files where it ran
FAILURE_REASON = "failure_reason"  # why a run ended FAILED or KILLED
DEVICE = "device"  # cpu, or the GPU's name
SEED = "seed"
HOST, PID, PID_START, HEARTBEAT = (
    "lenet5.host",
    "lenet5.pid",
    "lenet5.pid_start",
    "lenet5.heartbeat",
)
SLURM_TASK = "lenet5.slurm_task"  # the Slurm job (array: <job>_<task>) a run runs in
SLURM_ARRAYS = "lenet5.slurm_arrays"  # a sweep's parent: the Slurm arrays it submitted (a,b)

# --- metrics ----------------------------------------------------------------------------
TRAIN_LOSS, VAL_LOSS, TEST_LOSS = "train/loss", "val/loss", "test/loss"
VAL_ACC, TEST_ACC, TEST_ERROR = "val/acc", "test/acc", "test/error"
# The result once, at step 0, rounded (a bar per run in the UI's charts).
FINAL_TEST_ERROR, FINAL_TEST_ACC, FINAL_VAL_ACC = (
    "final/test_error",
    "final/test_acc",
    "final/val_acc",
)
# The run's training cost: forward+backward FLOPs per sample, and times the samples trained on.
FLOPS_PER_SAMPLE, FINAL_TRAIN_FLOPS = "flops_per_sample", "final/train_flops"
N_PARAMS = "n_params"
CHILDREN_FINISHED, CHILDREN_FAILED, CHILDREN_MISSING = (
    "children_finished",
    "children_failed",
    "children_missing",
)

# --- artifacts and environment ----------------------------------------------------------
MODEL_NAME = "model"  # a run's logged model (lenet5-predict --run ID)
SWEEP_ENV = "LENET5_SWEEP"  # JSON handed to a sweep's jobs: parent run id, sweep id, store
UI_ENV = "LENET5_UI_URL"  # where the MLflow UI answers, for printed links
