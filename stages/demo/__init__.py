"""`edgestream demo`: synthetic street scenes played as live cameras through the real pipeline.

See `stages.demo.app` for what it does and `stages.demo.cli` for the command line.
"""

from stages.demo.app import DemoOptions, DemoSummary, run_demo

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]
