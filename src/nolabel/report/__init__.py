"""The HTML report of a run folder: ``build_report(run_dir) -> run_dir/report.html``."""
from .html import build_report, summary_table

__all__ = ["build_report", "summary_table"]
