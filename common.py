"""The scripts' core, one import: `import common as C` gives the data, the split, the
features, the metrics, the baselines and the two-tower with its FAISS index.

Each name is defined once, in the module it comes from (read those top to bottom):
  config.py     seeds, paths, the two one-line error types, short_hash
  instacart.py  loading Kaggle-format CSVs (real or generated), validation, sampling, cache
  splits.py     the train / held-out split (one function for every experiment)
  features.py   user, item and user x item features, from training rows only
  options.py    the options every script shares, TowerConfig, --device (torch-free)
  metrics.py    metrics (conventions in per_user_metrics' docstring), intervals, agreement
  baselines.py  random, popularity, personal top-frequency (+ popular), TIFU-KNN
  towers.py     the two-tower model, its training loop, saved towers, FAISS retrieval
The other shared concepts have modules of their own, imported by name: reranking.py
(candidates, LightGBM / XGBoost), experiment.py (the Experiment scaffolding, provenance,
results JSON), text.py (template text, MiniLM embeddings, profiles), prompts.py, llm/,
descriptions.py, sample_generator.py and calibration.py.

Paths (config.CACHE_DIR, config.RESULTS_DIR) are not re-exported: they are read from
config at call time, so set them there.
"""

from baselines import (  # noqa: F401
    TIFU_GRID,
    TifuConfig,
    baseline_rankings,
    popularity_ranking,
    random_ranking,
    tifu_knn_ranking,
    tifu_user_vectors,
    top_frequency_order,
    top_frequency_ranking,
)
from config import (  # noqa: F401
    DATA_ENV,
    KAGGLE_DIR,
    RANDOM_SEED,
    REPO,
    SAMPLE_DIR,
    SPLIT_SEED,
    ConfigError,
    DataError,
    FatalError,
    short_hash,
)
from features import (  # noqa: F401
    GAP_SCALE,
    PAIR_COLUMNS,
    Features,
    build_features,
    reordered_in_rows,
)
from instacart import (  # noqa: F401
    CACHE_VERSION,
    CSV_SUFFIXES,
    DEFAULT_ITEMS,
    DEFAULT_USERS,
    EVAL_SETS,
    OCCASIONS_FILE,
    SAMPLE_PRODUCTS,
    SAMPLE_USERS,
    SCHEMA,
    Dataset,
    add_data_args,
    find_csv,
    index_of,
    load_dataset,
    load_from_args,
    read_kaggle_csv,
    read_kaggle_dir,
    resolve_data_dir,
    run_starts,
)
from metrics import (  # noqa: F401
    JACCARD_K,
    K_MAX,
    KS,
    RBO_P,
    agreement,
    bootstrap_ci,
    evaluate,
    jaccard_at,
    kendall_tau,
    paired_gain,
    per_user_metrics,
    rbo,
    split_truth,
)
from options import TowerConfig, pick_device  # noqa: F401
from splits import (  # noqa: F401
    Split,
    cold_start_split,
    restrict_truth,
    split_interactions,
)
from towers import (  # noqa: F401
    ItemTower,
    TwoTower,
    UserTower,
    faiss_index,
    lr_scheduler,
    mlp,
    model_dir,
    retrieve,
    search,
    tower_code_key,
    train_two_tower,
)
