"""Chat templates, for the samplers' ``--chat-template`` and the server's chat endpoint.

`render_chat` turns a conversation into the prompt text, through the
tokenizer's chat template when it has one. `instruction_prompt` is the
samplers' use of it: the model is asked to complete the function, and its
answer is started for it with an opened code block that repeats the prompt,
so the completion it writes is the continuation of the function body. That
keeps completions in the same shape as plain-prompt ones (`Problem.program`
prepends the prompt), and the stop string "\\n```" ends the completion where
the code block closes.
"""
from __future__ import annotations

from codegen.errors import UserError

INSTRUCTION = "Complete the following Python function. Reply with the whole function in one code block.\n\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages: list[dict[str, str]]) -> tuple[str, bool]:
    """The prompt for a conversation, and whether a chat template made it.

    A model without a chat template (a base code model such as the starter)
    continues the messages' text joined by newlines, so a user message holding
    a function header gets that function completed.
    """
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return "\n".join(m["content"] for m in messages), False


def instruction_prompt(tokenizer, prompt: str, model_name: str = "", feedback: str = "") -> str:
    """The chat-formatted prompt text for ``prompt``; `UserError` if the tokenizer has no template.

    ``feedback`` (iterative decoding's, `codegen.decoding.feedback.chat_feedback`)
    follows the function in the same user message.
    """
    if not has_chat_template(tokenizer):
        raise UserError(
            f"model {model_name or '(this model)'} has no chat template in its tokenizer: drop --chat-template "
            "to sample with the plain prompt"
        )
    content = f"{INSTRUCTION}```python\n{prompt}```" + (f"\n\n{feedback}" if feedback else "")
    head, _ = render_chat(tokenizer, [{"role": "user", "content": content}])
    return f"{head}```python\n{prompt}"
