"""The EMPO trainer: rewards, sampling, learning, storage, evaluation and the run driver."""
