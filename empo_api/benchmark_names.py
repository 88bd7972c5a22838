"""The benchmark names the models accept in spec.eval.benchmarks: the trainer's registry
(empo_trainer.evaluation.benchmarks) by name only, so validation needs neither torch nor data.
"""

# Benchmarks the trainer's registry knows (a test keeps this list equal to it); those in
# BENCHMARKS_NEEDING_DATA ship no data and are written NAME=URI.
BENCHMARK_NAMES = ("math500", "minerva_math", "olympiadbench", "aime24", "amc23", "gsm8k", "svamp", "asdiv", "mawps",
                   "arith-heldout", "digits-heldout", "mmlu_pro", "gpqa")
BENCHMARK_ALIASES = {"minerva": "minerva_math", "olympiad": "olympiadbench", "aime": "aime24", "amc": "amc23",
                     "mmlu-pro": "mmlu_pro", "gpqa_diamond": "gpqa", "arith_heldout": "arith-heldout"}
BENCHMARKS_NEEDING_DATA = ("mmlu_pro", "gpqa")
