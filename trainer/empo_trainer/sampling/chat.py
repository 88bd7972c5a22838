"""Questions -> chat prompts, the same way for training, evaluation and offline scoring."""

from __future__ import annotations

from typing import Any

from empo_api.models import PromptSpec


def build_messages(question: str, prompt: PromptSpec) -> list[dict[str, str]]:
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    # str.replace, not str.format: questions and templates are full of LaTeX braces.
    messages.append({"role": "user", "content": prompt.user_template.replace("{question}", question)})
    return messages


def render_prompt_ids(tokenizer: Any, prompt: str | list[dict[str, Any]], max_length: int | None = None) -> list[int]:
    """Token ids of a prompt ready for generation; long prompts keep their end (the question's tail)."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    if max_length is not None and len(ids) > max_length:
        ids = ids[-max_length:]
    return list(ids)
