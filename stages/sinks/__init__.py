"""Sinks: where a processed frame leaves edgestream.

What every sink receives (`FrameResult`, with its track lifecycle events) and the versioned
JSON documents they write are the runtime's payload types, `pipeline.payloads` (schemas in
``schemas/``); ``messages`` converts the tracker's output into them. ``stage`` is the sink
stage adapter (`SinkStage`: each frame to every configured sink). ``redis`` publishes to Redis
Streams; ``jsonl`` writes files for offline runs; ``video`` annotated video; ``cli`` holds
``edgestream tail``.
"""
