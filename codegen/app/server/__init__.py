"""A reranked, OpenAI-compatible completion server.

`itercode serve` answers ``POST /v1/completions`` and ``POST /v1/chat/completions``
with the best of several candidates: it draws ``n_candidates`` completions from
one shared engine (vLLM's async engine batches concurrent requests; the HF
backend is a serialised fallback), scores them with a reranker (mean token
log-probability when none is loaded), optionally runs the tests a request
carries in the sandbox and prefers passing candidates, and returns the best as
choice 0 with every candidate's score and verdict in the ``itercode`` extension
field of the response.

Modules: `config` (limits and defaults), `schemas` (request/response models),
`parsing` (reading a request, the error body),
`ranking` (scoring, sandbox, ordering), `metrics` (Prometheus text), `app`
(the FastAPI app factory). Candidates come from the generation engine the
offline samplers use too (`codegen.samplers.engine`).
Nothing heavy is imported here.
"""
