"""Names of the trial attributes, study attributes and run tags that hpo modules share.

A leaf module: it imports nothing of ours, so every hpo module can use it.
"""

# Trial user attributes.
WORKER = "worker"  # host:pid of the process running the trial
WORKER_RUN = "worker_run_id"  # that process's hpo run
TRIAL_RUN = "mlflow_run_id"  # the trial's own MLflow run
BEST_EPOCH = "best_epoch"  # the epoch the trial scored best at (its value's epoch)

# Study user attributes: a study is only continued with the same objective and space.
STUDY_METRIC = "metric"
STUDY_SPACE = "search_space"
STUDY_FIDELITY = "fidelity"  # users trained and validated on (fidelity.Fidelity.label)
STUDY_DATA = "data"  # digests of the trials' training and validation interactions

# Tags of a trial's MLflow run.
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "trial_state"
PARENT_RUN_TAG = "mlflow.parentRunId"
