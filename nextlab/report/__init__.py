"""The demo and its HTML report: `demo.py` runs the studies, one module per section lays out what each returns, on `page.py`."""

from nextlab.report.demo import REPORT_FILE, demo_config, run_demo
from nextlab.report.page import Section, render

__all__ = ["REPORT_FILE", "Section", "demo_config", "render", "run_demo"]
