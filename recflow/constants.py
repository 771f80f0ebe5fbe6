"""Names shared by the steps, ``main`` and the tests: columns, artifacts, tags, entry points."""

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
MODEL_NAME = "model"

# Run tags written by every step (the step cache and run-ID validation read them).
TAG_STEP = "recflow.step"
TAG_CODE_VERSION = "recflow.code_version"
TAG_DATASET = "recflow.dataset"
TAG_SOURCE_URL = "recflow.source_url"
TAG_CHECKSUM = "recflow.checksum"
TAG_MODEL_URI = "recflow.model_uri"

STEPS = ("download", "preprocess", "hpo", "train_best", "register")

DEFAULT_K = 10
DEFAULT_SEED = 1492
