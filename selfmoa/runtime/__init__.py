"""The call runtime beneath the graph core: how a model string becomes a client, and how it is called.

One module per concern, each imported by its own name: `models` (the provider registry,
resolution, `ModelTable`, `model_client`), `policy` (attempts, time limits), `limiter` (a
cap on calls in flight), `errors` (the error classes and how failures are described),
`secrets` (keys kept out of every text), `usage` (token counts), `inputs` (checks of a
conversation before any call). Nothing here imports the graph core (`selfmoa.graphs`,
`selfmoa.nodes`, `selfmoa.prompts`); tests/test_schema.py checks it.
"""
