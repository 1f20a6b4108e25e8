"""Chat-template prompts for instruction-tuned models (``--chat-template``).

The model is asked to complete the function, and its answer is started for it
with an opened code block that repeats the prompt, so the completion it writes
is the continuation of the function body. That keeps completions in the same
shape as plain-prompt ones (`Problem.program` prepends the prompt), and the
stop string "\\n```" ends the completion where the code block closes.
"""
from __future__ import annotations

from codegen.errors import UserError

INSTRUCTION = "Complete the following Python function. Reply with the whole function in one code block.\n\n"


def apply_chat_template(tokenizer, prompt: str, model_name: str = "") -> str:
    """The chat-formatted prompt text for ``prompt``; `UserError` if the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"model {model_name or '(this model)'} has no chat template in its tokenizer: drop --chat-template "
            "to sample with the plain prompt"
        )
    messages = [{"role": "user", "content": f"{INSTRUCTION}```python\n{prompt}```"}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{head}```python\n{prompt}"
