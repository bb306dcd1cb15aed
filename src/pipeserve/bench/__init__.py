"""Load generation: closed-loop clients or an open-loop request rate, with latency percentiles.

Uses only the public API (any callable that processes one item), so it measures pipeserve, a
peer framework or a plain function alike.
"""

from .loadgen import LoadResult, format_table, measure_ideal, percentile, run_closed_loop, run_open_loop

__all__ = ["LoadResult", "format_table", "measure_ideal", "percentile", "run_closed_loop", "run_open_loop"]
