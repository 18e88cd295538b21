"""Sinks: where a processed frame leaves edgestream.

``messages`` defines what every sink receives (`FrameResult`, with its track lifecycle events)
and the versioned JSON documents they write (schemas in ``schemas/``). ``redis`` publishes them
to Redis Streams; ``jsonl`` writes them to files for offline runs; ``cli`` holds ``edgestream
tail``.
"""
