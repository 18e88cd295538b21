"""``edgestream bench``: how many cameras does this box hold, at what latency?

- `stages.bench.model`: the bare model's frames/s and ms per batch (the ceiling), opened by
  the same code the pipeline's detect stage uses (`pipeline.procs.open_backend_from`).
- `stages.bench.runs`: one camera count through the real pipeline (`pipeline.run.Pipeline`:
  real processes, real sinks) or through the baseline loop, cameras played live; figures from
  the published messages (`stages.bench.measure`).
- `stages.bench.loop`: the baseline, a careful single-process loop (one PyAV thread per camera
  keeping only its newest frame, one inference loop, the same tracker, the same sink), run as
  its own process from the same config.
- `stages.bench.report`: ``cameras_held``, ``efficiency``, the table, the JSON and the plot.
- `stages.bench.cli`: the ``bench model`` and ``bench pipeline`` commands.
"""
