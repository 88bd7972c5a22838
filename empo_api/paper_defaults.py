"""The EMPO paper's math setup as data: its prompts and its benchmarks, the spec's defaults."""

PAPER_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
PAPER_USER_TEMPLATE = "{question} Let's think step by step and output the final answer within \\boxed{}."
PAPER_MATH_BENCHMARKS = ["math500", "minerva_math", "olympiadbench", "aime24", "amc23"]
