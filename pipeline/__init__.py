"""The edgestream runtime: it owns the contracts every stage is written against.

Messages and their payload types (`pipeline.messages`, `pipeline.payloads`), the stage
protocol and runner, transport, shared memory, supervisor, metrics, stats, config composition
and secrets redaction (`pipeline.redact`) live here.

Layering: ``stages`` import ``pipeline``, never the other way round. No module of this
package imports anything from ``stages`` — not at module level, not inside a function — with
two exceptions:

* `pipeline.procs`, the one wiring module that builds the stages from the config (the stage
  configs and the stages themselves). It imports them inside functions only, because the
  supervisor imports it and must not load a stage;
* `pipeline.cli`, the ``edgestream`` command, which mounts the stages' own subcommands.

Every stage adapter (``setup() / process(msg) / close()`` around a stage's work) lives with
its stage in ``stages/``. ``tests/pipeline/test_layering.py`` enforces the rule.
"""
