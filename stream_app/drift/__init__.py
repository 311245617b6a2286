"""Drift against the training distribution: PSI (``psi.py``), the worker's window of recent
scored rows (``window.py``) and the ``fraudstream drift`` report (``report.py``)."""
