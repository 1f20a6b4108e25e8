"""Decoding: from a problem to its answer, by best-of-n or by iterative refinement.

- `codegen.decoding.bestof`: keys and the best-first order (best-of-n; the
  server and `itercode eval --rerank` choose with it).
- `codegen.decoding.verifiers`: what scores a candidate (the docstring's
  examples in the sandbox, a reranker, both, a noisy one, the oracle).
- `codegen.decoding.feedback`: the feedback format a refinement round shows.
- `codegen.decoding.iterative`: best-of-N and IAD at the same number of
  generations (`decode_problems`, `IADState`).

The best-of-n names are importable from here as before
(``from codegen.decoding import best_index``).
"""
from codegen.decoding.bestof import best_first, best_index, ranking, verdict_key
from codegen.decoding.feedback import Attempt, base_feedback, chat_feedback
from codegen.decoding.iterative import (FEEDBACK_MODES, STRATEGIES, DecodeSettings, IADState, decode_problems,
                                        refine_prompt)
from codegen.decoding.verifiers import VERIFIERS, Check, Verifier, make_verifier

__all__ = [
    "FEEDBACK_MODES", "STRATEGIES", "VERIFIERS", "Attempt", "Check", "DecodeSettings", "IADState", "Verifier",
    "base_feedback", "best_first", "best_index", "chat_feedback", "decode_problems", "make_verifier", "ranking",
    "refine_prompt", "verdict_key",
]
