"""The operations console (``fraudstream console``): alerts, labels and live figures.

- ``auth.py``: analysts' tokens, login sessions, CSRF tokens;
- ``state.py``: what is held from the topics (latest alerts, recent transactions, scores,
  labels), the alert filters;
- ``stats.py``: the worker's ``/metrics`` as figures;
- ``decisions.py``: a decision's ``label.v1`` and the audit log;
- ``service.py``: the topic readers, the label producer, the metrics poller;
- ``web.py``: the HTTP routes (aiohttp) and ``static/``: the page (HTML, CSS, plain JS);
- ``app.py``: :func:`running_console`.
"""
