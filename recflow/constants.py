"""Names and defaults shared by the steps, ``main``, the package and the tests.

A leaf module: it imports nothing of ours, so any module can use it without an import circle.
Columns, artifact paths and run tags live here once (parameter defaults live in MLproject); ``contracts`` reads and
writes what crosses a step boundary under these names.
"""

USER_COL = "user_id"
ITEM_COL = "item_id"
RATING_COL = "rating"
TIMESTAMP_COL = "timestamp"
TITLE_COL = "title"
GENRES_COL = "genres"
RANK_COL = "rank"
SCORE_COL = "score"

# Artifact paths inside each step's run.
RAW_DIR = "raw"
DATA_DIR = "data"
TRAIN_FILE = "train.parquet"
VALID_FILE = "valid.parquet"
TEST_FILE = "test.parquet"
USER_FEATURES_FILE = "user_features.parquet"
ITEM_FEATURES_FILE = "item_features.parquet"
ITEMS_FILE = "items.parquet"
BEST_PARAMS_FILE = "best_params.json"
EASE_FILE = "baselines/ease.json"  # train_best: the λ tried and chosen on validation
BLEND_FILE = "baselines/blend.json"  # train_best: the blend shares tried and chosen on validation
PLOTS_DIR = "plots"
# register: how the new model and the alias holder were compared (rule, scores, overlap)
COMPARISON_FILE = "promotion/comparison.json"
MODEL_NAME = "model"

# Run tags. Every step writes TAG_STEP and TAG_CODE_VERSION (the step cache and run-ID
# validation read them); upstream run IDs are linked as "recflow.<parameter>".
TAG_PREFIX = "recflow."
TAG_STEP = "recflow.step"
TAG_PROCESS = "recflow.process"  # host:pid:start of the process that ran the step
TAG_CODE_VERSION = "recflow.code_version"
TAG_DATASET = "recflow.dataset"
TAG_SOURCE_URL = "recflow.source_url"
TAG_CHECKSUM = "recflow.checksum"
TAG_CHECKSUM_VERIFIED = "recflow.checksum_verified"
TAG_ITEMS_URL = "recflow.items_url"  # download of an interactions file: its item metadata
TAG_ITEMS_CHECKSUM = "recflow.items_checksum"
TAG_MODEL_URI = "recflow.model_uri"
TAG_BEST_TRIAL_RUN = "recflow.best_trial_run_id"
TAG_STUDY = "optuna.study"
TAG_MODEL_NAME = "recflow.model_name"
TAG_MODEL_VERSION = "recflow.model_version"
TAG_PROMOTED = "recflow.promoted"
TAG_PROMOTION_REASON = "recflow.promotion_reason"
TAG_TUNED_ON_SAMPLE = "recflow.tuned_on_sample"  # hpo: "true" when trials saw a user sample
TAG_TRAINED_ON = "recflow.trained_on"  # train_best: what the final model was trained on
TAG_EASE_SKIPPED = "recflow.ease_skipped"  # train_best: why EASE was not fitted
TAG_BLEND_SKIPPED = "recflow.blend_skipped"  # train_best: why EASE fitted was not blended
TAG_RATE_LOWERED = "recflow.learning_rate_lowered"  # train_best: the tuned rate diverged
TAG_MAIN_STEP_RUN = "recflow.run."  # + step name: main's link to each step's run
# The tag MLflow Projects sets on runs of an entry point (runs made before TAG_STEP existed).
TAG_ENTRY_POINT = "mlflow.project.entryPoint"

# Metric key prefixes of train_best: the model and its baselines on the test split.
TEST_PREFIX = "test_"
POPULARITY_PREFIX = "popularity_"
EASE_PREFIX = "ease_"
# The factorization model alone, where the served model blends it with EASE.
RANKFM_PREFIX = "rankfm_"
# What the served model is compared with, by metric prefix, as reports, plots and main's
# summary name them: the factorization model alone (when the served model is its blend with
# EASE), EASE and popularity.
BASELINES = {RANKFM_PREFIX: "rankfm alone", EASE_PREFIX: "EASE", POPULARITY_PREFIX: "popularity"}

STEPS = ("download", "preprocess", "hpo", "train_best", "register")
# Each step's upstream run-ID parameter and the step that parameter names.
UPSTREAM = {
    "preprocess": {"raw_run_id": "download"},
    "hpo": {"preprocess_run_id": "preprocess"},
    "train_best": {"preprocess_run_id": "preprocess", "hpo_run_id": "hpo"},
    "register": {"train_run_id": "train_best"},
}

# Parameter defaults are declared once, in MLproject: the steps' options read them from there
# (steps/common.py). This is the k every test report includes beside the tuned metric's.
DEFAULT_K = 10
# Where runs go when the user names no experiment: MLflow's Default experiment, renamed to this
# while it holds only this project's runs.
DEFAULT_EXPERIMENT_NAME = "movielens-rankfm"
# The experiment tag MLflow's UI reads to choose its view: training runs, not GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
CHALLENGER_ALIAS = "challenger"
